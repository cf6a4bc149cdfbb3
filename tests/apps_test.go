package tests

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Real programs on a kmsfs mount. Each workload also runs in a plain
// directory, and the two must give the same results.

// sqliteScript is a deterministic SQLite workload: 20,000 rows inserted
// in 20 transactions, updates, deletes and a VACUUM, then an integrity
// check and a digest of the table.
func sqliteScript(journal string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "PRAGMA journal_mode=%s;\n", journal)
	b.WriteString("CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL, n INTEGER NOT NULL);\n")
	b.WriteString("CREATE INDEX t_k ON t(k);\n")
	for tx := range 20 {
		fmt.Fprintf(&b, "BEGIN;\n"+
			"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000)\n"+
			"  INSERT INTO t(k, v, n) SELECT printf('key-%%02d-%%04d', %d, x), printf('%%.*c', 20 + (x * 7 + %d) %% 400, 'v'), x * %d FROM c;\n"+
			"COMMIT;\n", tx, tx, tx+1)
	}
	b.WriteString("BEGIN;\nUPDATE t SET v = v || printf('%.*c', n % 300, 'u'), n = n + 1 WHERE id % 7 = 0;\nCOMMIT;\n")
	b.WriteString("BEGIN;\nDELETE FROM t WHERE id % 5 = 0;\nCOMMIT;\n")
	b.WriteString("UPDATE t SET k = k || '-x' WHERE id % 11 = 0;\n")
	b.WriteString("VACUUM;\n")
	b.WriteString(sqliteCheck)
	return b.String()
}

// sqliteCheck prints "ok" and a digest of the table.
const sqliteCheck = "PRAGMA integrity_check;\n" +
	"SELECT count(*), sum(n), sum(length(v)), max(k), min(k) FROM t;\n"

func TestSQLite(t *testing.T) {
	sqlite := requireTool(t, "sqlite3")
	v := newVolume(t)
	for _, journal := range []string{"DELETE", "WAL"} {
		t.Run(journal, func(t *testing.T) {
			script := filepath.Join(t.TempDir(), "workload.sql")
			if err := os.WriteFile(script, []byte(sqliteScript(journal)), 0o644); err != nil {
				t.Fatal(err)
			}
			run := func(db string, args ...string) string {
				t.Helper()
				r := runCommand(os.Environ(), filepath.Dir(db), sqlite, append([]string{"-bail", db}, args...)...)
				if r.code != 0 || r.err != nil || r.stderr != "" {
					t.Fatalf("%v\nwant exit 0 and no errors", r)
				}
				return r.stdout
			}
			ref := run(filepath.Join(t.TempDir(), "ref.db"), ".read "+script)
			db := v.path("db-" + journal + ".sqlite")
			got := run(db, ".read "+script)
			if got != ref {
				t.Fatalf("sqlite3 workload on kmsfs printed\n%s\nwant (as on a plain directory)\n%s", got, ref)
			}
			lines := strings.Split(strings.TrimSpace(ref), "\n")
			if len(lines) < 2 || lines[len(lines)-2] != "ok" {
				t.Fatalf("sqlite3 workload printed %q, want integrity_check ok", lines)
			}
			v.remount()
			after := run(db, sqliteCheck)
			if want := strings.Join(lines[len(lines)-2:], "\n") + "\n"; after != want {
				t.Errorf("sqlite3 check after remount = %q, want %q", after, want)
			}
		})
	}
}

// gitEnv is a fixed git environment: no user or system configuration,
// fixed identities and dates, so that commit IDs are reproducible.
func gitEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=kmsfs test", "GIT_AUTHOR_EMAIL=test@kmsfs.invalid",
		"GIT_COMMITTER_NAME=kmsfs test", "GIT_COMMITTER_EMAIL=test@kmsfs.invalid",
		"GIT_AUTHOR_DATE=2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
	)
}

// gitWorkload makes a repository with two commits in dir/repo, packs
// it, checks it, clones it twice and checks the clones. It returns the
// commit ID of HEAD.
func gitWorkload(t *testing.T, git, dir string) string {
	t.Helper()
	env := gitEnv(t.TempDir())
	run := func(wd string, args ...string) string {
		t.Helper()
		r := runCommand(env, wd, git, args...)
		if r.code != 0 || r.err != nil {
			t.Fatalf("in %s: %v\nwant exit 0", wd, r)
		}
		return strings.TrimSpace(r.stdout)
	}
	repo := filepath.Join(dir, "repo")
	run(dir, "init", "-q", "-b", "main", "repo")
	rng := rand.New(rand.NewPCG(1, 2))
	bin := make([]byte, 300<<10)
	for i := range bin {
		bin[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{
		"README":       []byte("kmsfs git test\n"),
		"data.bin":     bin,
		"src/a.go":     pattern("a.go", 20000),
		"src/b.go":     pattern("b.go", 5000),
		"docs/big.txt": pattern("big", 1<<20+3),
	}
	write := func() {
		for name, data := range files {
			p := filepath.Join(repo, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatalf("os.WriteFile(%s) = %v", p, err)
			}
		}
	}
	write()
	run(repo, "add", "-A")
	run(repo, "commit", "-q", "-m", "first")
	files["README"] = append(files["README"], "second line\n"...)
	files["sub/c.txt"] = pattern("c.txt", 777)
	delete(files, "src/b.go")
	if err := os.Remove(filepath.Join(repo, "src/b.go")); err != nil {
		t.Fatal(err)
	}
	write()
	run(repo, "add", "-A")
	run(repo, "commit", "-q", "-m", "second")
	run(repo, "gc", "-q")
	run(repo, "fsck", "--full", "--strict")
	head := run(repo, "rev-parse", "HEAD")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"clone", []string{"clone", "-q", "repo", "clone"}},
		{"clone-nolocal", []string{"clone", "-q", "--no-local", "repo", "clone-nolocal"}},
	} {
		run(dir, c.args...)
		cdir := filepath.Join(dir, c.name)
		run(cdir, "fsck", "--full", "--strict")
		if got := run(cdir, "rev-parse", "HEAD"); got != head {
			t.Errorf("%s: git rev-parse HEAD = %s, want %s", c.name, got, head)
		}
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(cdir, name))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s: %s = %d bytes, %v, want %d bytes as committed", c.name, name, len(got), err, len(want))
			}
		}
		if st := run(cdir, "status", "--porcelain"); st != "" {
			t.Errorf("%s: git status --porcelain = %q, want clean", c.name, st)
		}
	}
	return head
}

func TestGit(t *testing.T) {
	git := requireTool(t, "git")
	want := gitWorkload(t, git, t.TempDir())
	v := newVolume(t)
	if got := gitWorkload(t, git, v.mnt); got != want {
		t.Errorf("HEAD of the repository made on kmsfs = %s, want %s (as on a plain directory)", got, want)
	}
	v.remount()
	r := runCommand(gitEnv(t.TempDir()), v.path("clone"), git, "fsck", "--full", "--strict")
	if r.code != 0 || r.err != nil {
		t.Errorf("after remount: %v\nwant exit 0", r)
	}
}

// tarTrees are the directories of $GOROOT/src that TestTar copies: some
// 2,000 files.
var tarTrees = []string{"net", "go", "crypto"}

// treeEntry describes one entry of a directory tree.
type treeEntry struct {
	mode fs.FileMode
	size int64
	sum  [32]byte // content of a file, target of a symlink
}

// hashTree describes every entry under root.
func hashTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	tree := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.size, e.sum = int64(len(b)), sha256.Sum256(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256([]byte(target))
		}
		tree[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return tree
}

// compareTrees reports every difference between two tree descriptions.
func compareTrees(t *testing.T, what string, got, want map[string]treeEntry) {
	t.Helper()
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, p)
		case g != w:
			t.Errorf("%s: %s = mode %v size %d sha256 %x, want mode %v size %d sha256 %x", what, p, g.mode, g.size, g.sum[:6], w.mode, w.size, w.sum[:6])
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", what, p)
		}
	}
}

func TestTar(t *testing.T) {
	tar := requireTool(t, "tar")
	r := runCommand(os.Environ(), "/", "go", "env", "GOROOT")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	src := filepath.Join(strings.TrimSpace(r.stdout), "src")
	want := map[string]map[string]treeEntry{}
	files := 0
	for _, tree := range tarTrees {
		want[tree] = hashTree(t, filepath.Join(src, tree))
		files += len(want[tree])
	}
	t.Logf("copying %d entries of %s", files, src)

	v := newVolume(t)
	in := v.path("src")
	out := t.TempDir()
	if err := os.Mkdir(in, 0o755); err != nil {
		t.Fatal(err)
	}
	pipe := func(from, to string) {
		t.Helper()
		create := exec.Command(tar, append([]string{"-C", from, "-cf", "-"}, tarTrees...)...)
		extract := exec.Command(tar, "-C", to, "-xf", "-")
		var createErr, extractErr strings.Builder
		create.Stderr, extract.Stderr = &createErr, &extractErr
		stream, err := create.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		extract.Stdin = stream
		if err := extract.Start(); err != nil {
			t.Fatal(err)
		}
		if err := create.Run(); err != nil {
			t.Errorf("tar -C %s -cf - = %v, want nil\n%s", from, err, createErr.String())
		}
		if err := extract.Wait(); err != nil {
			t.Errorf("tar -C %s -xf - = %v, want nil\n%s", to, err, extractErr.String())
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	check := func(root, what string) {
		t.Helper()
		for _, tree := range tarTrees {
			compareTrees(t, what+" "+tree, hashTree(t, filepath.Join(root, tree)), want[tree])
		}
	}
	pipe(src, in)
	check(in, "extracted into kmsfs:")
	pipe(in, out)
	check(out, "tarred back out of kmsfs:")
	v.remount()
	check(in, "kmsfs after remount:")
}
