package fs

import (
	"bytes"
	"testing"
)

func TestRedactor(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"write request", `rx 28: WRITE n2 {Fh 1 [0 +20)  L 0 RDWR}  "TOPSECRE"... 20b p123`, `rx 28: WRITE n2 {Fh 1 [0 +20)  L 0 RDWR}  <contents not logged> 20b p123`},
		{"short write", `rx 3: WRITE n2 {Fh 1 [0 +3)} "abc" 3b p1`, `rx 3: WRITE n2 {Fh 1 [0 +3)} <contents not logged> 3b p1`},
		{"read reply", `tx 30:     OK, 20b data "TOPSECRE"...`, `tx 30:     OK, 20b data <contents not logged>`},
		{"quotes inside", `tx 31:     OK, 8b data "a\"b\\c"`, `tx 31:     OK, 8b data <contents not logged>`},
		{"lookup keeps the name", `rx 5: LOOKUP n1 ["notes.txt"] 10b p9`, `rx 5: LOOKUP n1 ["notes.txt"] 10b p9`},
		{"create keeps the name", `rx 6: CREATE n1 {0100644 [WRONLY,CREAT,TRUNC]} "x.txt" p9`, `rx 6: CREATE n1 {0100644 [WRONLY,CREAT,TRUNC]} "x.txt" p9`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			redactor{&b}.Write([]byte(tc.in))
			if b.String() != tc.want {
				t.Errorf("redact(%q) = %q, want %q", tc.in, b.String(), tc.want)
			}
		})
	}
}
