package cryptfile

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReplayReencryptSkipsNamesFiles: the replay's search for a file by
// inode never takes a kmsfs.dirid or long-name file (of a volume with
// encrypted names) for the file of an interrupted re-encryption; such an
// inode is as good as gone, and the copy is kept.
func TestReplayReencryptSkipsNamesFiles(t *testing.T) {
	e, h, _, dir := reencryptEnv(t, 4096)
	h.Close()
	want := e.backing()
	sub := filepath.Join(e.dir, "Zm9vYmFyYmF6cXV4cXV1eA")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"kmsfs.dirid", "kmsfs.long.abc.name"} {
		p := filepath.Join(sub, n)
		if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 16), 0o400); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		var o, g [16]byte
		o[0], g[0] = 5, 6
		cp := bytes.Clone(want)
		copy(cp[16:32], g[:])
		name := reencryptName(st.Ino, o, g)
		if err := os.WriteFile(filepath.Join(e.dir, name), cp, 0o600); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := ReplayReencrypt(dir, log.New(&buf, "", 0)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "no file has inode") {
			t.Errorf("%s: replay log %q, want no file found for its inode", n, buf.String())
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, bytes.Repeat([]byte{1}, 16)) {
			t.Errorf("%s changed by the replay", n)
		}
		if l := leftovers(t, e.dir); len(l) != 1 || l[0] != name {
			t.Errorf("copies after the replay: %v, want %s kept", l, name)
		}
		os.Remove(filepath.Join(e.dir, name))
	}
	if !bytes.Equal(e.backing(), want) {
		t.Error("the file changed")
	}
}
