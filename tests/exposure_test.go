package tests

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBackingExposure runs a realistic workload on a volume with
// encrypted names (a project tree with long and non-ASCII names,
// symlinks, hard links and extended attributes, a git repository and a
// SQLite database) and then reads everything the backing directory
// holds: entry names, symlink targets, extended attribute names and
// values, and every byte of every file. No name, target, attribute or
// content written through the mount may appear in it. docs/SECURITY.md
// ("What the backing directory shows") lists what does remain visible;
// the second half of the test checks those claims too, so the list stays
// true.
func TestBackingExposure(t *testing.T) {
	git := requireTool(t, "git")
	sqlite := requireTool(t, "sqlite3")
	v := newVolume(t)

	// Needles: every plaintext the workload writes that must not show.
	needles := map[string]bool{}
	secret := func(s string) string { needles[s] = true; return s }

	dirs := []string{
		secret("quarterly-earnings-draft"),
		secret("quarterly-earnings-draft") + "/" + secret("acquisition-target-list"),
		secret("Überraschungsparty-Gäste"),
		secret("deep-nesting-level-one") + "/" + secret("deep-nesting-level-two") + "/" + secret("deep-nesting-level-three"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	long := secret(strings.Repeat("very-long-confidential-name-", 9)) // 252 bytes
	files := map[string]string{
		"quarterly-earnings-draft/" + secret("board-memo-confidential.txt"):                   secret("CONTENT-MARKER-revenue-fell-by-forty-percent"),
		"quarterly-earnings-draft/acquisition-target-list/" + secret("initech-valuation.csv"): secret("CONTENT-MARKER-initech,offer,1200000000"),
		"Überraschungsparty-Gäste/" + secret("gästeliste-geheim.md"):                          secret("CONTENT-MARKER-Alice, Bob, Carol"),
		"deep-nesting-level-one/deep-nesting-level-two/deep-nesting-level-three/" + long:      secret("CONTENT-MARKER-long-name-content"),
		secret("kmsfs.conf-lookalike-name"):                                                   secret("CONTENT-MARKER-root-file"),
	}
	for name, content := range files {
		writeFile(t, v.path(name), []byte(strings.Repeat(content+"\n", 300)))
	}
	if err := os.Symlink(secret("../quarterly-earnings-draft/board-memo-confidential.txt"), v.path("Überraschungsparty-Gäste/"+secret("memo-shortcut"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(v.path("quarterly-earnings-draft/board-memo-confidential.txt"), v.path(secret("hardlinked-memo-copy"))); err != nil {
		t.Fatal(err)
	}
	for name, attr := range map[string][2]string{
		"quarterly-earnings-draft/board-memo-confidential.txt": {secret("user.classification-level"), secret("top-secret-eyes-only")},
		"quarterly-earnings-draft":                             {secret("user.owner-department"), secret("mergers-and-acquisitions")},
	} {
		if err := unix.Setxattr(v.path(name), attr[0], []byte(attr[1]), 0); err != nil {
			t.Fatalf("setxattr %s %s: %v", name, attr[0], err)
		}
	}

	// A git repository with a commit, and a SQLite database.
	repo := v.path(secret("secret-project-repository"))
	if err := os.Mkdir(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(repo, secret("launch-plan-phoenix.txt")), []byte(secret("CONTENT-MARKER-phoenix-launches-in-march")+"\n"))
	env := append(os.Environ(), "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com", "HOME="+v.home)
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-q", "-m", secret("commit-message-marker-phoenix")}} {
		if r := runCommand(env, repo, git, args...); r.code != 0 {
			t.Fatalf("%v", r)
		}
	}
	db := v.path(secret("customer-database.sqlite"))
	if r := runCommand(os.Environ(), v.mnt, sqlite, db,
		"CREATE TABLE "+secret("customer_credit_cards")+"(n TEXT); INSERT INTO customer_credit_cards VALUES('"+secret("CONTENT-MARKER-4111111111111111")+"');"); r.code != 0 {
		t.Fatalf("%v", r)
	}
	// Names git made for itself must not show either.
	for _, n := range []string{"COMMIT_EDITMSG", "description", "packed-refs", "info/exclude"} {
		if _, err := os.Lstat(filepath.Join(repo, ".git", n)); err == nil {
			needles[filepath.Base(n)] = true
		}
	}
	needles["customer-database.sqlite-journal"] = true
	v.unmount()

	// Every needle: as it is, and each path component of it (at least 6
	// bytes, so that chance matches in ciphertext stay out).
	var list [][]byte
	for n := range needles {
		for _, part := range strings.Split(n, "/") {
			if len(part) >= 6 {
				list = append(list, []byte(part))
			}
		}
	}
	found := func(where string, b []byte) {
		for _, n := range list {
			if bytes.Contains(b, n) {
				t.Errorf("%s contains %q", where, n)
			}
		}
	}
	encName := regexp.MustCompile(`^([A-Za-z0-9_-]{22,255}|kmsfs\.long\.[A-Za-z0-9_-]{43}(\.name)?|kmsfs\.dirid)$`)
	rootOwn := map[string]bool{"kmsfs.conf": true, "kmsfs.journal": true}
	var nEntries, nDirs, nLinks int
	err := filepath.WalkDir(v.cipherDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == v.cipherDir {
			return nil
		}
		rel, _ := filepath.Rel(v.cipherDir, p)
		name := d.Name()
		nEntries++
		found("backing name "+rel, []byte(name))
		if !(filepath.Dir(rel) == "." && rootOwn[name]) && !encName.MatchString(name) {
			t.Errorf("backing name %q is not an encrypted name nor one of kmsfs's own", rel)
		}
		attrs := llistXattrs(t, p)
		for _, a := range attrs {
			found("xattr name of "+rel, []byte(a))
			val := make([]byte, 70000)
			k, err := unix.Lgetxattr(p, a, val)
			if err != nil {
				t.Errorf("lgetxattr %s %s: %v", rel, a, err)
				continue
			}
			found("xattr value of "+rel, val[:k])
			if !strings.HasPrefix(a, "user.kmsfs.") && !strings.HasPrefix(a, "security.") && !strings.HasPrefix(a, "system.") {
				t.Errorf("%s has the backing xattr %q in clear", rel, a)
			}
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			nLinks++
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			found("symlink target of "+rel, []byte(target))
			if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(target) {
				t.Errorf("symlink %s has the stored target %q, not an encrypted one", rel, target)
			}
		case d.IsDir():
			nDirs++
			if _, err := os.Lstat(filepath.Join(p, "kmsfs.dirid")); err != nil {
				t.Errorf("directory %s has no kmsfs.dirid: %v", rel, err)
			}
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			found("content of "+rel, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if nDirs == 0 || nLinks != 1 || nEntries < 20 {
		t.Errorf("walked %d entries, %d directories, %d symlinks: the workload did not reach the backing directory", nEntries, nDirs, nLinks)
	}

	// What stays visible (docs/SECURITY.md): the tree's shape, entry
	// types, plaintext sizes, hard link counts, modes and times, and
	// each symlink target's and xattr value's length.
	v.mount()
	memo := "quarterly-earnings-draft/board-memo-confidential.txt"
	var plain, back syscall.Stat_t
	if err := syscall.Lstat(v.path(memo), &plain); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Lstat(v.backing(memo), &back); err != nil {
		t.Fatal(err)
	}
	if back.Nlink != 2 || back.Mode != plain.Mode || back.Mtim != plain.Mtim {
		t.Errorf("backing of %s: nlink %d mode %o mtime %v; mount: mode %o mtime %v — SECURITY.md says link counts, modes and times show", memo, back.Nlink, back.Mode, back.Mtim, plain.Mode, plain.Mtim)
	}
	if want := v.backingSizes(t, plain.Size); !slices.Contains(want, back.Size) {
		t.Errorf("backing size of %s = %d, want one of %v (the plaintext size follows from it)", memo, back.Size, want)
	}
	if got, err := v.plainSizeOf(t, back.Size); err != nil || got != plain.Size {
		t.Errorf("plaintext size of %s from its backing size %d = %d, %v; want %d (the plaintext size follows from it)", memo, back.Size, got, err, plain.Size)
	}
	ents, err := os.ReadDir(v.backing("quarterly-earnings-draft"))
	if err != nil {
		t.Fatal(err)
	}
	mounted, err := os.ReadDir(v.path("quarterly-earnings-draft"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(mounted)+1 { // + kmsfs.dirid
		t.Errorf("backing directory has %d entries, mount %d: SECURITY.md says the number of entries per directory shows", len(ents), len(mounted))
	}
}

// llistXattrs lists the extended attribute names of p (not following a
// symlink).
func llistXattrs(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 65536)
	k, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil
		}
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	var out []string
	for _, a := range strings.Split(string(buf[:k]), "\x00") {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}
