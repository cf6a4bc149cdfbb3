package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests of encrypted names (docs/FORMAT.md, "Names (version 2)"):
// what an attacker who can write the backing directory gets (TestNamesTamper),
// POSIX behaviour with names, symlink targets and extended attributes
// encrypted (TestNamesLongNames and the others), what the backing directory
// shows (TestNamesBackingHidesNames), and a --plaintext-names volume.
//
// Tampering is done while the volume is unmounted (the mount caches
// lookups), and the volume is mounted again before it is checked.

// Names used by several tests: a long name of each kind.
var (
	namesXLong  = namesXName("long-", 200)               // a long ASCII name
	namesXLong2 = namesXRunes("long2-", 'é', 255)        // a long UTF-8 name
	namesX256   = namesXName("too-long-", 256)           // one byte too long
	namesX256U  = namesXRunes("too-long-", '€', 256)     // the same in UTF-8
	namesXL1    = namesXName("L1-", 255)                 // rename cases
	namesXL2    = namesXRunes("L2-", 'ü', 255)           // rename cases
	namesXL3    = namesXName("L3-", 176)                 // rename cases
	namesXKeyed = namesXRunes("key-", '\U0001F511', 255) // 4-byte runes
)

// namesXEnv is a volume holding a few directories and files that the
// tamper cases damage; files are what they hold, through the mount.
type namesXEnv struct {
	t     *testing.T
	v     *volume
	files map[string][]byte
}

// newNamesXEnv makes the volume of a tamper case, mounted.
func newNamesXEnv(t *testing.T) *namesXEnv {
	t.Helper()
	v := newVolume(t)
	e := &namesXEnv{t: t, v: v, files: map[string][]byte{}}
	for _, d := range []string{"victimdir", "otherdir", "sparedir"} {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatalf("os.Mkdir(%s) = %v, want nil", d, err)
		}
	}
	for i, f := range []string{"bystander", "victimdir/secret", "victimdir/" + namesXLong, "victimdir/" + namesXLong2,
		"victimdir/keep", "otherdir/resident", "sparedir/spare"} {
		e.files[f] = pattern(fmt.Sprintf("file-%d", i), 5000+i)
		writeFile(t, v.path(f), e.files[f])
	}
	return e
}

// intact checks that the files rels read back unchanged.
func (e *namesXEnv) intact(rels ...string) {
	e.t.Helper()
	for _, rel := range rels {
		checkContent(e.t, e.v.path(rel), e.files[rel], e.v.blockSize)
	}
}

// victimEntries are the names victimdir lists before any damage.
var namesXVictimEntries = []string{"keep", "secret", namesXLong, namesXLong2}

// namesXLookupFails checks that a lookup of p through the mount fails with
// one of errs (ENOENT if none is given).
func namesXLookupFails(t *testing.T, p string, errs ...syscall.Errno) {
	t.Helper()
	if len(errs) == 0 {
		errs = []syscall.Errno{syscall.ENOENT}
	}
	fi, err := os.Lstat(p)
	if err == nil {
		t.Errorf("os.Lstat(%s) = %v (size %d), want an error in %v", namesXShort(p), fi.Mode(), fi.Size(), errs)
		return
	}
	if !slices.Contains(errs, errnoOf(err)) {
		t.Errorf("os.Lstat(%s) = %v, want an error in %v", namesXShort(p), err, errs)
	}
}

// namesXRename renames a backing entry, failing the test on error.
func namesXRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatalf("os.Rename(backing %s, %s) = %v", from, to, err)
	}
}

// namesXWriteBacking replaces a backing file.
func namesXWriteBacking(t *testing.T, p string, data []byte) {
	t.Helper()
	os.Remove(p)
	if err := os.WriteFile(p, data, 0o400); err != nil {
		t.Fatalf("os.WriteFile(backing %s) = %v", p, err)
	}
}

// namesXAlter changes one base64url character of s in the middle.
func namesXAlter(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestNamesTamper(t *testing.T) {
	t.Run("entry moved to another directory", func(t *testing.T) {
		e := newNamesXEnv(t)
		short := namesXBacking(t, e.v, "victimdir/secret")
		long := namesXBacking(t, e.v, "victimdir/"+namesXLong)
		other := namesXBacking(t, e.v, "otherdir")
		e.v.unmount()
		namesXRename(t, short, filepath.Join(other, filepath.Base(short)))
		namesXRename(t, long, filepath.Join(other, filepath.Base(long)))
		namesXRename(t, long+namesXLongSuffix, filepath.Join(other, filepath.Base(long)+namesXLongSuffix))
		e.v.mount()
		m := namesXMark(e.v)
		namesXExpectList(t, e.v.path("otherdir"), "resident")
		m.expect(t, "the moved entry is reported", "otherdir", filepath.Base(short))
		m.expect(t, "the moved long entry is reported", "otherdir", filepath.Base(long))
		namesXExpectList(t, e.v.path("victimdir"), "keep", namesXLong2)
		for _, p := range []string{"victimdir/secret", "otherdir/secret", "victimdir/" + namesXLong, "otherdir/" + namesXLong} {
			namesXLookupFails(t, e.v.path(p))
		}
		e.intact("bystander", "victimdir/keep", "victimdir/"+namesXLong2, "otherdir/resident", "sparedir/spare")
	})

	t.Run("entry given the encrypted name of another directory's entry", func(t *testing.T) {
		e := newNamesXEnv(t)
		secret := namesXBacking(t, e.v, "victimdir/secret")
		long := namesXBacking(t, e.v, "victimdir/"+namesXLong)
		resident := namesXBacking(t, e.v, "otherdir/resident")
		spare := namesXBacking(t, e.v, "sparedir/spare")
		e.v.unmount()
		// otherdir/resident takes the backing name of victimdir/secret;
		// sparedir/spare that of victimdir's long entry, with a copy of
		// its .name file.
		namesXRename(t, resident, filepath.Join(filepath.Dir(resident), filepath.Base(secret)))
		namesXRename(t, spare, filepath.Join(filepath.Dir(spare), filepath.Base(long)))
		enc, err := os.ReadFile(long + namesXLongSuffix)
		if err != nil {
			t.Fatal(err)
		}
		namesXWriteBacking(t, filepath.Join(filepath.Dir(spare), filepath.Base(long)+namesXLongSuffix), enc)
		e.v.mount()
		m := namesXMark(e.v)
		namesXExpectList(t, e.v.path("otherdir"))
		m.expect(t, "the renamed entry is reported", "otherdir", filepath.Base(secret))
		namesXExpectList(t, e.v.path("sparedir"))
		m.expect(t, "the renamed long entry is reported", "sparedir", filepath.Base(long))
		for _, p := range []string{"otherdir/secret", "otherdir/resident", "sparedir/" + namesXLong, "sparedir/spare"} {
			namesXLookupFails(t, e.v.path(p))
		}
		namesXExpectList(t, e.v.path("victimdir"), namesXVictimEntries...)
		e.intact("bystander", "victimdir/secret", "victimdir/"+namesXLong, "victimdir/"+namesXLong2, "victimdir/keep")
	})

	t.Run("directory IDs of two directories swapped", func(t *testing.T) {
		e := newNamesXEnv(t)
		a := namesXBacking(t, e.v, "victimdir")
		b := namesXBacking(t, e.v, "otherdir")
		secret := namesXBacking(t, e.v, "victimdir/secret")
		resident := namesXBacking(t, e.v, "otherdir/resident")
		e.v.unmount()
		ida, idb := filepath.Join(a, namesXDirID), filepath.Join(b, namesXDirID)
		namesXRename(t, ida, ida+".tmp")
		namesXRename(t, idb, ida)
		namesXRename(t, ida+".tmp", idb)
		e.v.mount()
		m := namesXMark(e.v)
		for dir, ents := range map[string][]string{"victimdir": namesXVictimEntries, "otherdir": {"resident"}} {
			got, err := namesXList(e.v.path(dir))
			if len(got) != 0 || (err != nil && errnoOf(err) != syscall.EIO) {
				t.Errorf("os.ReadDir(%s with another directory's ID) = %q, %v; want nothing listed (or EIO)", dir, got, err)
			}
			for _, n := range ents {
				namesXLookupFails(t, e.v.path(dir+"/"+n), syscall.ENOENT, syscall.EIO)
			}
		}
		m.expect(t, "victimdir's entries are reported", "victimdir", filepath.Base(secret))
		m.expect(t, "otherdir's entries are reported", "otherdir", filepath.Base(resident))
		e.intact("bystander", "sparedir/spare")
	})

	// A directory whose kmsfs.dirid is missing or damaged while it holds
	// entries: nothing in it can be named. kmsfs must refuse with EIO, say
	// so, never hang (FIFO), and never write a new ID over the old one.
	damages := []struct {
		name   string
		damage func(t *testing.T, dir, id string)
		errs   []syscall.Errno
	}{
		{"deleted", func(t *testing.T, dir, id string) { os.Remove(id) }, nil},
		{"empty", func(t *testing.T, dir, id string) { namesXWriteBacking(t, id, nil) }, nil},
		{"15 bytes", func(t *testing.T, dir, id string) {
			b, _ := os.ReadFile(id)
			namesXWriteBacking(t, id, b[:15])
		}, nil},
		{"17 bytes", func(t *testing.T, dir, id string) {
			b, _ := os.ReadFile(id)
			namesXWriteBacking(t, id, append(b, 0))
		}, nil},
		{"a directory", func(t *testing.T, dir, id string) {
			os.Remove(id)
			if err := os.Mkdir(id, 0o700); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"a symlink to another directory's ID", func(t *testing.T, dir, id string) {
			os.Remove(id)
			other := namesXOtherDirID(t, dir)
			if err := os.Symlink(other, id); err != nil {
				t.Fatal(err)
			}
		}, []syscall.Errno{syscall.EIO, syscall.ELOOP}},
		{"a FIFO", func(t *testing.T, dir, id string) {
			os.Remove(id)
			if err := unix.Mkfifo(id, 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, dmg := range damages {
		t.Run("directory ID "+dmg.name+" in a non-empty directory", func(t *testing.T) {
			e := newNamesXEnv(t)
			dir := namesXBacking(t, e.v, "victimdir")
			id := filepath.Join(dir, namesXDirID)
			e.v.unmount()
			dmg.damage(t, dir, id)
			before := namesXBackingList(t, dir)
			var idBefore unix.Stat_t
			idErrBefore := unix.Lstat(id, &idBefore)
			e.v.mount()
			errs := dmg.errs
			if errs == nil {
				errs = []syscall.Errno{syscall.EIO}
			}
			m := namesXMark(e.v)
			namesXWithin(t, "lookups in victimdir", func() error {
				for _, n := range namesXVictimEntries {
					namesXLookupFails(t, e.v.path("victimdir/"+n), errs...)
				}
				return nil
			})
			m.expect(t, "the lookup is refused because of the directory ID", "victimdir", namesXDirID)
			m = namesXMark(e.v)
			namesXWithin(t, "listing victimdir", func() error {
				got, err := namesXList(e.v.path("victimdir"))
				if !slices.Contains(errs, errnoOf(err)) {
					t.Errorf("os.ReadDir(victimdir) = %q, %v; want an error in %v", got, err, errs)
				}
				return nil
			})
			m.expect(t, "the listing is refused because of the directory ID", "victimdir", namesXDirID)
			namesXWithin(t, "creating in victimdir", func() error {
				err := os.WriteFile(e.v.path("victimdir/new"), []byte("x"), 0o644)
				if !slices.Contains(errs, errnoOf(err)) {
					t.Errorf("os.WriteFile(victimdir/new) = %v, want an error in %v", err, errs)
				}
				err = os.Mkdir(e.v.path("victimdir/newdir"), 0o755)
				if !slices.Contains(errs, errnoOf(err)) {
					t.Errorf("os.Mkdir(victimdir/newdir) = %v, want an error in %v", err, errs)
				}
				return nil
			})
			// kmsfs wrote no new ID and removed nothing.
			if after := namesXBackingList(t, dir); !slices.Equal(after, before) {
				t.Errorf("backing victimdir = %q after the refused operations, want it unchanged: %q", after, before)
			}
			var idAfter unix.Stat_t
			if err := unix.Lstat(id, &idAfter); (err == nil) != (idErrBefore == nil) || (err == nil && (idAfter.Mode != idBefore.Mode || idAfter.Size != idBefore.Size || idAfter.Ino != idBefore.Ino)) {
				t.Errorf("backing victimdir/%s changed: mode %o size %d (%v), want mode %o size %d (%v)", namesXDirID, idAfter.Mode, idAfter.Size, err, idBefore.Mode, idBefore.Size, idErrBefore)
			}
			if _, err := os.Stat(e.v.mnt); err != nil {
				t.Errorf("os.Stat(mount point) = %v after the damaged directory, want nil", err)
			}
			e.intact("bystander", "otherdir/resident", "sparedir/spare")
		})
	}

	t.Run("empty directory without a directory ID gets a new one", func(t *testing.T) {
		v := newVolume(t)
		// The first use of each directory differs: a listing, a
		// creation, a lookup of a missing name.
		dirs := []string{"fresh-list", "fresh-create", "fresh-lookup"}
		writeFile(t, v.path("bystander"), pattern("bystander", 100))
		backing := map[string]string{}
		for _, d := range dirs {
			if err := os.Mkdir(v.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
			backing[d] = namesXBacking(t, v, d)
		}
		v.unmount()
		for _, d := range dirs {
			if err := os.Remove(filepath.Join(backing[d], namesXDirID)); err != nil {
				t.Fatal(err)
			}
		}
		v.mount()
		namesXWithin(t, "first use", func() error {
			namesXExpectList(t, v.path("fresh-list"))
			writeFile(t, v.path("fresh-create/f"), []byte("created"))
			namesXLookupFails(t, v.path("fresh-lookup/missing"))
			return nil
		})
		for _, d := range dirs {
			writeFile(t, v.path(d+"/"+namesXLong), []byte("long "+d))
			if err := os.Mkdir(v.path(d+"/sub"), 0o755); err != nil {
				t.Errorf("os.Mkdir(%s/sub) = %v, want nil", d, err)
			}
			writeFile(t, v.path(d+"/sub/g"), []byte("g "+d))
		}
		namesXCheckBacking(t, v)
		check := func() {
			t.Helper()
			for _, d := range dirs {
				want := []string{namesXLong, "sub"}
				if d == "fresh-create" {
					want = append(want, "f")
				}
				namesXExpectList(t, v.path(d), want...)
				if got, err := os.ReadFile(v.path(d + "/" + namesXLong)); err != nil || string(got) != "long "+d {
					t.Errorf("os.ReadFile(%s/long) = %q, %v", d, got, err)
				}
				if got, err := os.ReadFile(v.path(d + "/sub/g")); err != nil || string(got) != "g "+d {
					t.Errorf("os.ReadFile(%s/sub/g) = %q, %v", d, got, err)
				}
			}
		}
		check()
		v.remount()
		check()
	})

	t.Run("FIFO as a long name's .name file", func(t *testing.T) {
		e := newNamesXEnv(t)
		long := namesXBacking(t, e.v, "victimdir/"+namesXLong)
		e.v.unmount()
		os.Remove(long + namesXLongSuffix)
		if err := unix.Mkfifo(long+namesXLongSuffix, 0o600); err != nil {
			t.Fatal(err)
		}
		e.v.mount()
		m := namesXMark(e.v)
		namesXWithin(t, "listing victimdir", func() error {
			namesXExpectList(t, e.v.path("victimdir"), "keep", "secret", namesXLong2)
			return nil
		})
		m.expect(t, "the long entry is reported", "victimdir", filepath.Base(long))
		// A lookup and a read need not fail (the name itself is
		// authenticated by its hash) but must not hang either.
		namesXWithin(t, "reading the long entry", func() error {
			os.ReadFile(e.v.path("victimdir/" + namesXLong))
			return nil
		})
		e.intact("bystander", "victimdir/secret", "victimdir/keep", "victimdir/"+namesXLong2, "otherdir/resident")
	})

	// A long name's .name file altered: the entry is not listed and the
	// listing says why.
	alterations := []struct {
		name  string
		alter func(t *testing.T, nameFile, other string)
	}{
		{"one character changed", func(t *testing.T, nameFile, other string) {
			b, _ := os.ReadFile(nameFile)
			namesXWriteBacking(t, nameFile, []byte(namesXAlter(string(b))))
		}},
		{"deleted", func(t *testing.T, nameFile, other string) { os.Remove(nameFile) }},
		{"empty", func(t *testing.T, nameFile, other string) { namesXWriteBacking(t, nameFile, nil) }},
		{"with a newline", func(t *testing.T, nameFile, other string) {
			b, _ := os.ReadFile(nameFile)
			namesXWriteBacking(t, nameFile, append(b, '\n'))
		}},
		{"holding another long entry's name", func(t *testing.T, nameFile, other string) {
			b, _ := os.ReadFile(other)
			namesXWriteBacking(t, nameFile, b)
		}},
		{"a directory", func(t *testing.T, nameFile, other string) {
			os.Remove(nameFile)
			os.Mkdir(nameFile, 0o700)
		}},
		{"a symlink to its own copy", func(t *testing.T, nameFile, other string) {
			b, _ := os.ReadFile(nameFile)
			namesXWriteBacking(t, nameFile+".copy", b)
			os.Remove(nameFile)
			os.Symlink(filepath.Base(nameFile)+".copy", nameFile)
		}},
	}
	for _, alt := range alterations {
		t.Run("long name file "+alt.name, func(t *testing.T) {
			e := newNamesXEnv(t)
			long := namesXBacking(t, e.v, "victimdir/"+namesXLong)
			long2 := namesXBacking(t, e.v, "victimdir/"+namesXLong2)
			e.v.unmount()
			alt.alter(t, long+namesXLongSuffix, long2+namesXLongSuffix)
			e.v.mount()
			m := namesXMark(e.v)
			namesXWithin(t, "listing victimdir", func() error {
				namesXExpectList(t, e.v.path("victimdir"), "keep", "secret", namesXLong2)
				return nil
			})
			m.expect(t, "the long entry is reported", "victimdir", filepath.Base(long))
			e.intact("bystander", "victimdir/secret", "victimdir/keep", "victimdir/"+namesXLong2, "otherdir/resident")
		})
	}

	t.Run("foreign entries planted in the backing directory", func(t *testing.T) {
		e := newNamesXEnv(t)
		victim := namesXBacking(t, e.v, "victimdir")
		e.v.unmount()
		plants := []struct {
			name  string
			plant func(p string) error
		}{
			{"planted.txt", func(p string) error { return os.WriteFile(p, []byte("clear text"), 0o644) }},
			{"NOTES", func(p string) error { return os.WriteFile(p, []byte("clear text"), 0o644) }},
			{strings.Repeat("A", 43), func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }},
			{"kmsfs.long.forged", func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }},
			{"evil-dir", func(p string) error { return os.Mkdir(p, 0o755) }},
			{"evil-link", func(p string) error { return os.Symlink("/etc/passwd", p) }},
			{"evil-fifo", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		}
		for _, dir := range []string{e.v.cipherDir, victim} {
			for _, p := range plants {
				if err := p.plant(filepath.Join(dir, p.name)); err != nil {
					t.Fatal(err)
				}
			}
		}
		e.v.mount()
		m := namesXMark(e.v)
		namesXWithin(t, "listing", func() error {
			namesXExpectList(t, e.v.mnt, "bystander", "otherdir", "sparedir", "victimdir")
			namesXExpectList(t, e.v.path("victimdir"), namesXVictimEntries...)
			return nil
		})
		for _, p := range plants {
			// One line for the root and one for victimdir.
			m.expect(t, "the planted entry is reported", "victimdir", strconv.Quote(p.name))
			if n := strings.Count(m.text(), strconv.Quote(p.name)); n < 2 {
				t.Errorf("daemon log names %q %d times, want once for the root and once for victimdir:\n%s", p.name, n, m.text())
			}
			namesXLookupFails(t, e.v.path(p.name))
			namesXLookupFails(t, e.v.path("victimdir/"+p.name))
		}
		e.intact("bystander", "victimdir/secret", "victimdir/keep", "victimdir/"+namesXLong, "victimdir/"+namesXLong2, "otherdir/resident", "sparedir/spare")
	})

	t.Run("symlink targets altered", func(t *testing.T) {
		v := newVolume(t)
		writeFile(t, v.path("file"), pattern("file", 3000))
		links := map[string]string{
			"link-flipped":   "target-flipped",
			"link-clear":     "target-clear",
			"link-truncated": "target-truncated/" + strings.Repeat("x", 100),
			"link-copied":    "target-copied",
			"link-source":    "target/of/the/source/link",
			"link-untouched": "file",
		}
		backing := map[string]string{}
		stored := map[string]string{}
		for name, target := range links {
			if err := os.Symlink(target, v.path(name)); err != nil {
				t.Fatal(err)
			}
			backing[name] = namesXBacking(t, v, name)
			s, err := os.Readlink(backing[name])
			if err != nil {
				t.Fatal(err)
			}
			stored[name] = s
		}
		v.unmount()
		relink := func(name, target string) {
			os.Remove(backing[name])
			if err := os.Symlink(target, backing[name]); err != nil {
				t.Fatal(err)
			}
		}
		relink("link-flipped", namesXAlter(stored["link-flipped"]))
		relink("link-clear", "/etc/passwd")
		relink("link-truncated", stored["link-truncated"][:len(stored["link-truncated"])-4])
		relink("link-copied", stored["link-source"])
		v.mount()
		for _, name := range []string{"link-flipped", "link-clear", "link-truncated"} {
			m := namesXMark(v)
			if got, err := os.Readlink(v.path(name)); errnoOf(err) != syscall.EIO {
				t.Errorf("os.Readlink(%s with an altered target) = %q, %v; want EIO", name, got, err)
			}
			m.expect(t, "the altered target is reported", "readlink", name)
		}
		// docs/FORMAT.md: "A target is not bound to its link": a stored
		// target copied from another link reads as that link's target.
		// If kmsfs starts binding targets, update the documentation and
		// this check together.
		if got, err := os.Readlink(v.path("link-copied")); err != nil || got != links["link-source"] {
			t.Errorf("os.Readlink(link-copied, given link-source's stored target) = %q, %v; want %q (documented)", got, err, links["link-source"])
		}
		for _, name := range []string{"link-source", "link-untouched"} {
			if got, err := os.Readlink(v.path(name)); err != nil || got != links[name] {
				t.Errorf("os.Readlink(%s) = %q, %v; want %q", name, got, err, links[name])
			}
		}
		checkContent(t, v.path("link-untouched"), pattern("file", 3000), v.blockSize)
	})

	t.Run("extended attributes altered", func(t *testing.T) {
		v := newVolume(t)
		files := []string{"xattr-f", "xattr-g", "xattr-h", "xattr-k"}
		for _, f := range files {
			writeFile(t, v.path(f), pattern(f, 100))
		}
		set := func(f, attr, val string) {
			t.Helper()
			if err := unix.Setxattr(v.path(f), attr, []byte(val), 0); err != nil {
				t.Fatalf("unix.Setxattr(%s, %s) = %v, want nil", f, attr, err)
			}
		}
		bf := namesXBacking(t, v, "xattr-f")
		userAttrs := func(p string) map[string][]byte {
			out := map[string][]byte{}
			for k, val := range namesXBackingXattrs(t, p) {
				if strings.HasPrefix(k, "user.") {
					out[k] = val
				}
			}
			return out
		}
		// The backing names of user.alpha and user.beta, found by
		// setting them one after the other.
		set("xattr-f", "user.alpha", "value-alpha-f")
		var alpha, beta string
		for k := range userAttrs(bf) {
			alpha = k
		}
		set("xattr-f", "user.beta", "value-beta-f")
		for k := range userAttrs(bf) {
			if k != alpha {
				beta = k
			}
		}
		if alpha == "" || beta == "" || alpha == beta {
			t.Fatalf("backing attributes of xattr-f: %q; want two", slices.Collect(func(y func(string) bool) {
				for k := range userAttrs(bf) {
					y(k)
				}
			}))
		}
		set("xattr-g", "user.alpha", "value-alpha-g")
		set("xattr-h", "user.alpha", "value-alpha-h")
		set("xattr-h", "user.beta", "value-beta-h")
		set("xattr-k", "user.ok", "value-ok")
		bg, bh, bk := namesXBacking(t, v, "xattr-g"), namesXBacking(t, v, "xattr-h"), namesXBacking(t, v, "xattr-k")
		v.unmount()
		lset := func(p, attr string, val []byte) {
			t.Helper()
			if err := unix.Lsetxattr(p, attr, val, 0); err != nil {
				t.Fatalf("unix.Lsetxattr(backing %s, %s) = %v", p, attr, err)
			}
		}
		fa := userAttrs(bf)[alpha]
		// xattr-f: user.alpha's value copied to user.beta.
		lset(bf, beta, fa)
		// xattr-g: user.alpha's stored value altered.
		ga := slices.Clone(userAttrs(bg)[alpha])
		ga[len(ga)-1] ^= 1
		lset(bg, alpha, ga)
		// xattr-h: xattr-f's user.alpha copied over its own.
		lset(bh, alpha, fa)
		// xattr-k: foreign attributes planted.
		planted := []string{"user.foo", "user.kmsfs.garbage", "user.kmsfs." + strings.Repeat("A", 40), namesXAlter(beta), "user.kmsfs"}
		for _, p := range planted {
			lset(bk, p, []byte("planted value"))
		}
		v.mount()

		get := func(f, attr string) ([]byte, error) {
			buf := make([]byte, 1024)
			n, err := unix.Getxattr(v.path(f), attr, buf)
			if err != nil {
				return nil, err
			}
			return buf[:n], nil
		}
		for _, c := range []struct{ f, attr string }{{"xattr-f", "user.beta"}, {"xattr-g", "user.alpha"}} {
			m := namesXMark(v)
			if got, err := get(c.f, c.attr); errnoOf(err) != syscall.EIO {
				t.Errorf("unix.Getxattr(%s, %s) with a damaged value = %q, %v; want EIO", c.f, c.attr, got, err)
			}
			if n, err := unix.Getxattr(v.path(c.f), c.attr, nil); errnoOf(err) != syscall.EIO {
				t.Errorf("unix.Getxattr(%s, %s, size query) with a damaged value = %d, %v; want EIO", c.f, c.attr, n, err)
			}
			m.expect(t, "the damaged attribute is reported", c.f, c.attr)
		}
		for _, c := range []struct{ f, attr, want string }{
			{"xattr-f", "user.alpha", "value-alpha-f"},
			// docs/FORMAT.md: a value "is bound to its name ..., not to
			// the file": copied from another file under the same name,
			// it reads as that file's value. If kmsfs starts binding
			// values to files, update the documentation and this check.
			{"xattr-h", "user.alpha", "value-alpha-f"},
			{"xattr-h", "user.beta", "value-beta-h"},
			{"xattr-k", "user.ok", "value-ok"},
		} {
			if got, err := get(c.f, c.attr); err != nil || string(got) != c.want {
				t.Errorf("unix.Getxattr(%s, %s) = %q, %v; want %q", c.f, c.attr, got, err, c.want)
			}
		}
		m := namesXMark(v)
		got := slices.DeleteFunc(namesXListXattrs(t, v.path("xattr-k")), func(a string) bool { return !strings.HasPrefix(a, "user.") })
		if !slices.Equal(got, []string{"user.ok"}) {
			t.Errorf("unix.Listxattr(xattr-k with planted attributes) = %q, want [user.ok]", got)
		}
		for _, p := range planted {
			m.expect(t, "the planted attribute is reported", "xattr-k", strconv.Quote(p))
		}
		if got, err := get("xattr-k", "user.foo"); errnoOf(err) != syscall.ENODATA {
			t.Errorf("unix.Getxattr(xattr-k, user.foo) planted in clear = %q, %v; want ENODATA", got, err)
		}
		for _, f := range files {
			checkContent(t, v.path(f), pattern(f, 100), v.blockSize)
		}
	})
}

// namesXOtherDirID returns the kmsfs.dirid of another backing directory
// than dir (a sibling of it), relative to dir.
func namesXOtherDirID(t *testing.T, dir string) string {
	t.Helper()
	parent := filepath.Dir(dir)
	for _, n := range namesXBackingList(t, parent) {
		p := filepath.Join(parent, n)
		if p == dir {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, namesXDirID)); err == nil {
			return filepath.Join("..", n, namesXDirID)
		}
	}
	t.Fatalf("no other directory with an ID beside %s", dir)
	return ""
}

// namesXListXattrs lists the extended attributes of p through the
// mount, sorted; the size query must agree with the list.
func namesXListXattrs(t *testing.T, p string) []string {
	t.Helper()
	size, err := unix.Listxattr(p, nil)
	if err != nil {
		t.Errorf("unix.Listxattr(%s, size query) = %v", namesXShort(p), err)
		return nil
	}
	buf := make([]byte, size+64)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Errorf("unix.Listxattr(%s) = %v", namesXShort(p), err)
		return nil
	}
	if n != size {
		t.Errorf("unix.Listxattr(%s) = %d bytes, but the size query said %d", namesXShort(p), n, size)
	}
	var out []string
	for _, a := range strings.Split(string(buf[:n]), "\x00") {
		if a != "" {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// namesXNames are the names the POSIX tests use: each kind of name, on
// both sides of the limit of a short backing name (175 bytes).
var namesXNames = []struct {
	desc string
	name string
	long bool
}{
	{"1 byte", "a", false},
	{"175 bytes, the longest short one", namesXName("n175-", 175), false},
	{"176 bytes, the shortest long one", namesXName("n176-", 176), true},
	{"255 bytes", namesXName("n255-", 255), true},
	{"255 bytes of 2-byte UTF-8", namesXLong2, true},
	{"255 bytes of 3-byte UTF-8", namesXRunes("€-", '€', 255), true},
	{"255 bytes of 4-byte UTF-8", namesXKeyed, true},
	{"invalid UTF-8", "bad-\xff\xfe-\xc0\x80-\xed\xa0\x80", false},
	{"dots and spaces", "..  .x. ", false},
	{"control characters", "a\nb\tc\x01\x7f", false},
	{"a backing-looking name", "kmsfs.long.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false},
}

// TestNamesLongNames creates every kind of entry under names up to 255
// bytes (and multi-byte UTF-8), checks their backing forms, removes them
// and checks that nothing of kmsfs's is left behind.
func TestNamesLongNames(t *testing.T) {
	v := newVolume(t)
	for _, d := range []string{"files", "dirs", "links", "hardlinks", "fifos"} {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(v.mnt, &st); err != nil || st.Namelen != 255 {
		t.Errorf("statfs(mount).Namelen = %d, %v; want 255", st.Namelen, err)
	}
	content := func(i int) []byte { return pattern(fmt.Sprintf("name-%d", i), 1000+i) }
	var all []string
	for i, c := range namesXNames {
		all = append(all, c.name)
		f := v.path("files/" + c.name)
		writeFile(t, f, content(i))
		checkContent(t, f, content(i), v.blockSize)
		if err := os.Mkdir(v.path("dirs/"+c.name), 0o700); err != nil {
			t.Errorf("os.Mkdir(%s) = %v, want nil", c.desc, err)
		}
		writeFile(t, v.path("dirs/"+c.name+"/"+c.name), content(i))
		if err := os.Symlink("target-"+c.name, v.path("links/"+c.name)); err != nil {
			t.Errorf("os.Symlink(%s) = %v, want nil", c.desc, err)
		}
		if err := os.Link(f, v.path("hardlinks/"+c.name)); err != nil {
			t.Errorf("os.Link(%s) = %v, want nil", c.desc, err)
		}
		if err := unix.Mkfifo(v.path("fifos/"+c.name), 0o600); err != nil {
			t.Errorf("unix.Mkfifo(%s) = %v, want nil", c.desc, err)
		}
		// The backing form: short names are one backing entry of the
		// length docs/FORMAT.md gives, long ones kmsfs.long.<hash>.
		for _, d := range []string{"files", "dirs", "links", "fifos"} {
			b := filepath.Base(namesXBacking(t, v, d+"/"+c.name))
			if got := namesXIsLong(b); got != c.long {
				t.Errorf("backing name of a %s name in %s = %q: long = %v, want %v", c.desc, d, b, got, c.long)
			}
			if want := (4*(16+len(c.name)) + 2) / 3; !c.long && len(b) != want {
				t.Errorf("backing name of a %s name = %d characters, want %d (base64url of 16+%d bytes)", c.desc, len(b), want, len(c.name))
			}
			if len(c.name) >= 4 && strings.Contains(b, c.name) {
				t.Errorf("backing name %q contains the name", b)
			}
		}
	}
	// O_TMPFILE given a long name with linkat.
	tmpName := namesXName("tmpfile-", 255)
	all = append(all, tmpName)
	fd, err := unix.Open(v.path("files"), unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Errorf("open(O_TMPFILE) = %v, want nil", err)
	} else {
		unix.Write(fd, []byte("tmpfile content"))
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, v.path("files/"+tmpName), unix.AT_SYMLINK_FOLLOW); err != nil {
			t.Errorf("linkat(O_TMPFILE, 255-byte name) = %v, want nil", err)
		}
		unix.Close(fd)
		if got, err := os.ReadFile(v.path("files/" + tmpName)); err != nil || string(got) != "tmpfile content" {
			t.Errorf("os.ReadFile(linked O_TMPFILE) = %q, %v", got, err)
		}
	}

	check := func(when string) {
		t.Helper()
		namesXExpectList(t, v.path("files"), all...)
		namesXExpectList(t, v.path("dirs"), all[:len(namesXNames)]...)
		namesXExpectList(t, v.path("links"), all[:len(namesXNames)]...)
		namesXExpectList(t, v.path("hardlinks"), all[:len(namesXNames)]...)
		namesXExpectList(t, v.path("fifos"), all[:len(namesXNames)]...)
		for i, c := range namesXNames {
			checkContent(t, v.path("files/"+c.name), content(i), v.blockSize)
			checkContent(t, v.path("hardlinks/"+c.name), content(i), v.blockSize)
			checkContent(t, v.path("dirs/"+c.name+"/"+c.name), content(i), v.blockSize)
			namesXExpectList(t, v.path("dirs/"+c.name), c.name)
			if got, err := os.Readlink(v.path("links/" + c.name)); err != nil || got != "target-"+c.name {
				t.Errorf("os.Readlink(links/%s) = %q, %v", c.desc, got, err)
			}
			if fi, err := os.Lstat(v.path("files/" + c.name)); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 2 {
				t.Errorf("os.Lstat(files/%s) = %v, %v; want 2 links", c.desc, fi, err)
			}
			if fi, err := os.Lstat(v.path("fifos/" + c.name)); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
				t.Errorf("os.Lstat(fifos/%s) = %v, %v; want a FIFO", c.desc, fi, err)
			}
		}
		if long := namesXCheckBacking(t, v); long == 0 {
			t.Errorf("no long backing entry %s", when)
		}
		if t.Failed() {
			t.Fatalf("failures %s", when)
		}
	}
	check("after creating")
	snap := namesXSnapshot(t, v.mnt)
	v.remount()
	check("after a remount")
	namesXCompare(t, "tree after a remount", namesXSnapshot(t, v.mnt), snap)

	// Names one byte too long.
	for _, n := range []string{namesX256, namesX256U} {
		desc := fmt.Sprintf("a %d-byte name", len(n))
		if err := os.WriteFile(v.path("files/"+n), nil, 0o644); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("creating %s = %v, want ENAMETOOLONG", desc, err)
		}
		if err := os.Mkdir(v.path("dirs/"+n), 0o755); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("os.Mkdir(%s) = %v, want ENAMETOOLONG", desc, err)
		}
		if err := os.Symlink("t", v.path("links/"+n)); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("os.Symlink(%s) = %v, want ENAMETOOLONG", desc, err)
		}
		if err := os.Link(v.path("files/a"), v.path("hardlinks/"+n)); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("os.Link(%s) = %v, want ENAMETOOLONG", desc, err)
		}
		if err := unix.Mkfifo(v.path("fifos/"+n), 0o600); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("mkfifo(%s) = %v, want ENAMETOOLONG", desc, err)
		}
		if err := os.Rename(v.path("files/a"), v.path("files/"+n)); errnoOf(err) != syscall.ENAMETOOLONG {
			t.Errorf("os.Rename(a, %s) = %v, want ENAMETOOLONG", desc, err)
		}
		namesXLookupFails(t, v.path("files/"+n), syscall.ENAMETOOLONG)
	}
	check("after the refused names")

	// Everything removed: only the directories' IDs are left.
	if err := os.Remove(v.path("files/" + tmpName)); err != nil {
		t.Errorf("unlink(files/O_TMPFILE) = %v", err)
	}
	for _, c := range namesXNames {
		if err := os.Remove(v.path("files/" + c.name)); err != nil {
			t.Errorf("unlink(files/%s) = %v", c.desc, err)
		}
		if err := os.Remove(v.path("dirs/" + c.name)); errnoOf(err) != syscall.ENOTEMPTY {
			t.Errorf("rmdir(dirs/%s, not empty) = %v, want ENOTEMPTY", c.desc, err)
		}
		for _, p := range []string{"dirs/" + c.name + "/" + c.name, "dirs/" + c.name, "links/" + c.name, "hardlinks/" + c.name, "fifos/" + c.name} {
			if err := os.Remove(v.path(p)); err != nil {
				t.Errorf("removing %s: %v", namesXShort(p), err)
			}
		}
	}
	for _, d := range []string{"files", "dirs", "links", "hardlinks", "fifos"} {
		namesXExpectList(t, v.path(d))
		if got := namesXBackingList(t, namesXBacking(t, v, d)); !slices.Equal(got, []string{namesXDirID}) {
			t.Errorf("backing %s after removing everything = %q, want only %s", d, got, namesXDirID)
		}
	}
	namesXCheckBacking(t, v)
}

// namesXRenameCase is one rename: the entries it starts from (relative
// to a directory of its own), the rename, and the tree it leaves: path →
// content of a file, "/" for a directory, "-> target" for a symlink.
type namesXRenameCase struct {
	name     string
	dirs     []string
	files    map[string]string
	links    map[string]string // hard links: new name → existing file
	symlinks map[string]string // name → target
	from, to string
	flags    uint
	err      syscall.Errno
	want     map[string]string
}

func TestNamesRename(t *testing.T) {
	S, L1, L2, L3 := "short", namesXL1, namesXL2, namesXL3
	cases := []namesXRenameCase{
		{name: "short to long", files: map[string]string{S: "s"}, from: S, to: L1,
			want: map[string]string{L1: "s"}},
		{name: "long to short", files: map[string]string{L1: "l"}, from: L1, to: S,
			want: map[string]string{S: "l"}},
		{name: "long to long across directories", dirs: []string{"x", "y"}, files: map[string]string{"x/" + L1: "l"},
			from: "x/" + L1, to: "y/" + L2, want: map[string]string{"x": "/", "y/" + L2: "l"}},
		{name: "long to 176 bytes", files: map[string]string{L1: "l"}, from: L1, to: L3,
			want: map[string]string{L3: "l"}},
		{name: "long over an existing long name", files: map[string]string{L1: "a", L2: "b"}, from: L1, to: L2,
			want: map[string]string{L2: "a"}},
		{name: "long over an existing long name across directories", dirs: []string{"x", "y"},
			files: map[string]string{"x/" + L1: "a", "y/" + L2: "b"}, from: "x/" + L1, to: "y/" + L2,
			want: map[string]string{"x": "/", "y/" + L2: "a"}},
		{name: "short over an existing long name", files: map[string]string{S: "a", L1: "b"}, from: S, to: L1,
			want: map[string]string{L1: "a"}},
		{name: "long over an existing short name", files: map[string]string{L1: "a", S: "b"}, from: L1, to: S,
			want: map[string]string{S: "a"}},
		{name: "RENAME_EXCHANGE short and long", files: map[string]string{S: "s", L1: "l"}, from: S, to: L1,
			flags: unix.RENAME_EXCHANGE, want: map[string]string{S: "l", L1: "s"}},
		{name: "RENAME_EXCHANGE long and long across directories", dirs: []string{"x", "y"},
			files: map[string]string{"x/" + L1: "a", "y/" + L2: "b"}, from: "x/" + L1, to: "y/" + L2,
			flags: unix.RENAME_EXCHANGE, want: map[string]string{"x/" + L1: "b", "y/" + L2: "a"}},
		{name: "RENAME_EXCHANGE long directory and short file", dirs: []string{L3}, files: map[string]string{L3 + "/in": "i", S: "s"},
			from: L3, to: S, flags: unix.RENAME_EXCHANGE, want: map[string]string{S + "/in": "i", L3: "s"}},
		{name: "RENAME_NOREPLACE over an existing long name", files: map[string]string{S: "a", L1: "b"}, from: S, to: L1,
			flags: unix.RENAME_NOREPLACE, err: syscall.EEXIST, want: map[string]string{S: "a", L1: "b"}},
		{name: "long name to itself", files: map[string]string{L1: "a"}, from: L1, to: L1,
			want: map[string]string{L1: "a"}},
		// POSIX: renaming one hard link of a file over another does
		// nothing and succeeds; both names stay.
		{name: "between two long hard links of one file", files: map[string]string{L1: "a"}, links: map[string]string{L2: L1},
			from: L1, to: L2, want: map[string]string{L1: "a", L2: "a"}},
		{name: "between a short and a long hard link of one file", files: map[string]string{S: "a"}, links: map[string]string{L1: S},
			from: S, to: L1, want: map[string]string{S: "a", L1: "a"}},
		{name: "long directory with entries across directories", dirs: []string{"x", "y", "x/" + L3, "x/" + L3 + "/sub"},
			files: map[string]string{"x/" + L3 + "/f": "f", "x/" + L3 + "/sub/g": "g", "x/" + L3 + "/" + L1: "l"},
			from:  "x/" + L3, to: "y/" + L2,
			want: map[string]string{"x": "/", "y/" + L2 + "/f": "f", "y/" + L2 + "/sub/g": "g", "y/" + L2 + "/" + L1: "l"}},
		{name: "directory over an empty directory", dirs: []string{"A", "B"}, files: map[string]string{"A/f": "f"},
			from: "A", to: "B", want: map[string]string{"B/f": "f"}},
		{name: "long directory over an empty long directory", dirs: []string{L1, L2}, files: map[string]string{L1 + "/f": "f"},
			from: L1, to: L2, want: map[string]string{L2 + "/f": "f"}},
		{name: "empty directory over an empty directory", dirs: []string{"A", "B"},
			from: "A", to: "B", want: map[string]string{"B": "/"}},
		{name: "directory over a non-empty directory", dirs: []string{"A", "B"}, files: map[string]string{"A/f": "f", "B/g": "g"},
			from: "A", to: "B", err: syscall.ENOTEMPTY, want: map[string]string{"A/f": "f", "B/g": "g"}},
		{name: "to a 256-byte name", files: map[string]string{S: "a"}, from: S, to: namesX256,
			err: syscall.ENAMETOOLONG, want: map[string]string{S: "a"}},
		{name: "long symlink to another long name", symlinks: map[string]string{L1: "the-target"}, from: L1, to: L2,
			want: map[string]string{L2: "-> the-target"}},
	}
	v := newVolume(t)
	for i := range cases {
		c := &cases[i]
		t.Run(c.name, func(t *testing.T) {
			dir := v.path(fmt.Sprintf("case-%02d", i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, d := range c.dirs {
				if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatalf("os.Mkdir(%s) = %v", namesXShort(d), err)
				}
			}
			for _, f := range slices.Sorted(namesXKeys(c.files)) {
				writeFile(t, filepath.Join(dir, f), []byte(c.files[f]))
			}
			for n, old := range c.links {
				if err := os.Link(filepath.Join(dir, old), filepath.Join(dir, n)); err != nil {
					t.Fatalf("os.Link = %v", err)
				}
			}
			for n, target := range c.symlinks {
				if err := os.Symlink(target, filepath.Join(dir, n)); err != nil {
					t.Fatalf("os.Symlink = %v", err)
				}
			}
			err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, c.from), unix.AT_FDCWD, filepath.Join(dir, c.to), c.flags)
			if errnoOf(err) != c.err {
				t.Errorf("renameat2(%s, %s, %#x) = %v, want %v", namesXShort(c.from), namesXShort(c.to), c.flags, err, c.err)
			}
			namesXCheckTree(t, dir, c.want)
			namesXCheckBacking(t, v)
		})
	}
	v.remount()
	for i, c := range cases {
		namesXCheckTree(t, v.path(fmt.Sprintf("case-%02d", i)), c.want)
	}
}

// namesXKeys yields the keys of m.
func namesXKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// namesXCheckTree checks the tree under dir (through the mount) against
// want (see namesXRenameCase); parents of what want names are
// directories.
func namesXCheckTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	full := map[string]string{}
	for p, c := range want {
		full[p] = c
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			full[d] = "/"
		}
	}
	got := map[string]string{}
	namesXWalk(t, dir, func(dirfd int, d, name string, st *unix.Stat_t) {
		rel := path.Join(d, name)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			got[rel] = "/"
		case unix.S_IFREG:
			b, err := namesXReadAt(dirfd, name)
			if err != nil {
				got[rel] = "read: " + err.Error()
			} else {
				got[rel] = string(b)
			}
		case unix.S_IFLNK:
			buf := make([]byte, 4096)
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				got[rel] = "readlink: " + err.Error()
			} else {
				got[rel] = "-> " + string(buf[:n])
			}
		default:
			got[rel] = fmt.Sprintf("mode %o", st.Mode)
		}
	})
	namesXCompare(t, "tree of "+filepath.Base(dir), got, full)
}

func TestNamesRmdir(t *testing.T) {
	v := newVolume(t)
	long := namesXName("dir-", 255)
	mk := func(d string) {
		t.Helper()
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatalf("os.Mkdir(%s) = %v", namesXShort(d), err)
		}
	}
	// Directories holding only kmsfs's own files: their ID, and one with
	// a long-name file left behind by a crash.
	mk("empty")
	mk(long)
	mk("stale")
	stale := namesXBacking(t, v, "stale")
	e := []byte(strings.Repeat("A", 300))
	if err := os.WriteFile(filepath.Join(stale, namesXLongName(e)+namesXLongSuffix), e, 0o400); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"empty", long, "stale"} {
		b := namesXBacking(t, v, d)
		if err := os.Remove(v.path(d)); err != nil {
			t.Errorf("rmdir(%s holding only kmsfs's files) = %v, want nil", namesXShort(d), err)
		}
		if _, err := os.Lstat(b); !os.IsNotExist(err) {
			t.Errorf("backing %s after rmdir: %v, want it gone", namesXShort(d), err)
		}
		namesXLookupFails(t, v.path(d))
	}
	// Directories with entries.
	nonEmpty := map[string]func(d string){
		"with-file":      func(d string) { writeFile(t, v.path(d+"/f"), nil) },
		"with-long-file": func(d string) { writeFile(t, v.path(d+"/"+namesXLong), nil) },
		"with-subdir":    func(d string) { mk(d + "/sub") },
		"with-symlink":   func(d string) { os.Symlink("t", v.path(d+"/"+namesXLong2)) },
		"with-dirid":     func(d string) { writeFile(t, v.path(d+"/"+namesXDirID), []byte("mine")) },
		"with-foreign": func(d string) {
			// A backing entry kmsfs did not write: not listed, and not
			// removed either.
			os.WriteFile(filepath.Join(namesXBacking(t, v, d), "foreign.txt"), []byte("x"), 0o644)
		},
	}
	for d, fill := range nonEmpty {
		mk(d)
		fill(d)
		if err := os.Remove(v.path(d)); errnoOf(err) != syscall.ENOTEMPTY {
			t.Errorf("rmdir(%s) = %v, want ENOTEMPTY", d, err)
		}
		if _, err := os.Stat(v.path(d)); err != nil {
			t.Errorf("os.Stat(%s) after a refused rmdir = %v, want nil", d, err)
		}
	}
	if got := namesXBackingList(t, namesXBacking(t, v, "with-foreign")); !slices.Contains(got, "foreign.txt") || !slices.Contains(got, namesXDirID) {
		t.Errorf("backing with-foreign after a refused rmdir = %q, want foreign.txt and %s kept", got, namesXDirID)
	}
	namesXExpectList(t, v.path("with-dirid"), namesXDirID)
	if got, err := os.ReadFile(v.path("with-dirid/" + namesXDirID)); err != nil || string(got) != "mine" {
		t.Errorf("os.ReadFile(with-dirid/kmsfs.dirid) = %q, %v; want the user's file", got, err)
	}
	if err := os.Remove(v.path("missing")); errnoOf(err) != syscall.ENOENT {
		t.Errorf("rmdir(missing) = %v, want ENOENT", err)
	}
	v.remount()
	for d := range nonEmpty {
		if _, err := os.Stat(v.path(d)); err != nil {
			t.Errorf("os.Stat(%s) after a remount = %v, want nil", d, err)
		}
	}
	for _, d := range []string{"empty", long, "stale"} {
		namesXLookupFails(t, v.path(d))
	}
}

// TestNamesDeepPaths makes 40 levels of directories: with names of 64
// bytes through ordinary paths (their backing paths are longer than
// PATH_MAX), and with names of 255 and 175 bytes through descriptors (the
// path through the mount is longer than PATH_MAX too).
func TestNamesDeepPaths(t *testing.T) {
	v := newVolume(t)
	const depth = 40

	t.Run("64-byte names", func(t *testing.T) {
		var parts []string
		for i := range depth {
			parts = append(parts, namesXName(fmt.Sprintf("level-%02d-", i), 64))
		}
		rel := filepath.Join(parts...)
		if err := os.MkdirAll(v.path(rel), 0o755); err != nil {
			t.Fatalf("os.MkdirAll(%d levels) = %v", depth, err)
		}
		data := pattern("deep", 10000)
		writeFile(t, v.path(rel+"/file"), data)
		check := func() {
			t.Helper()
			checkContent(t, v.path(rel+"/file"), data, v.blockSize)
			for i := range depth {
				want := parts[i]
				if i == 0 {
					namesXExpectList(t, v.mnt, want)
					continue
				}
				namesXExpectList(t, v.path(filepath.Join(parts[:i]...)), want)
			}
			namesXExpectList(t, v.path(rel), "file")
		}
		check()
		longest := 0
		namesXWalk(t, v.cipherDir, func(dirfd int, dir, name string, st *unix.Stat_t) {
			longest = max(longest, len(path.Join(dir, name)))
		})
		if longest <= 4096 {
			t.Logf("longest backing path %d bytes: not longer than PATH_MAX", longest)
		}
		v.remount()
		check()
		if err := os.RemoveAll(v.path(parts[0])); err != nil {
			t.Errorf("os.RemoveAll = %v, want nil", err)
		}
		namesXExpectList(t, v.mnt)
	})

	t.Run("255-byte names through descriptors", func(t *testing.T) {
		var parts []string
		for i := range depth {
			if i%2 == 0 {
				parts = append(parts, namesXRunes(fmt.Sprintf("%02d-", i), 'ж', 255))
			} else {
				parts = append(parts, namesXName(fmt.Sprintf("%02d-", i), 175))
			}
		}
		// walk opens the directory at level n (0 is the mount).
		walk := func(n int) int {
			t.Helper()
			fd, err := unix.Open(v.mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				nfd, err := unix.Openat(fd, parts[i], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				unix.Close(fd)
				if err != nil {
					t.Fatalf("openat(level %d) = %v", i, err)
				}
				fd = nfd
			}
			return fd
		}
		fd := walk(0)
		for i := range depth {
			if err := unix.Mkdirat(fd, parts[i], 0o755); err != nil {
				t.Fatalf("mkdirat(level %d) = %v", i, err)
			}
			nfd, err := unix.Openat(fd, parts[i], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			if err != nil {
				t.Fatalf("openat(level %d) = %v", i, err)
			}
			fd = nfd
		}
		data := pattern("deeper", 5000)
		ffd, err := unix.Openat(fd, namesXLong, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("openat(O_CREAT) at level %d = %v", depth, err)
		}
		if n, err := unix.Write(ffd, data); err != nil || n != len(data) {
			t.Errorf("write = %d, %v", n, err)
		}
		unix.Close(ffd)
		unix.Close(fd)
		check := func() {
			t.Helper()
			fd := walk(depth)
			defer unix.Close(fd)
			got, err := namesXReadAt(fd, namesXLong)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("reading the file at level %d = %d bytes, %v; want %d bytes", depth, len(got), err, len(data))
			}
			f := os.NewFile(uintptr(namesXMust(unix.Dup(fd))), "deep")
			names, err := f.Readdirnames(-1)
			f.Close()
			if err != nil || !slices.Equal(names, []string{namesXLong}) {
				t.Errorf("listing level %d = %q, %v", depth, names, err)
			}
		}
		check()
		namesXCheckBacking(t, v)
		v.remount()
		check()
		// Removed from the bottom up.
		for n := depth; n >= 0; n-- {
			fd := walk(n)
			name := namesXLong
			flags := 0
			if n < depth {
				name, flags = parts[n], unix.AT_REMOVEDIR
			}
			if err := unix.Unlinkat(fd, name, flags); err != nil {
				t.Errorf("unlinkat(level %d) = %v", n, err)
			}
			unix.Close(fd)
		}
		namesXExpectList(t, v.mnt)
		for _, b := range namesXBackingList(t, v.cipherDir) {
			if !strings.HasPrefix(b, "kmsfs.") {
				t.Errorf("backing root after removing everything holds %q", b)
			}
		}
	})
}

// namesXMust returns v, panicking on err (for calls that cannot fail here).
func namesXMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestNamesSymlinkTargets checks symlink targets up to the 3039 bytes an
// encrypted target may have, their sizes, and that longer ones are
// refused without leaving anything behind.
func TestNamesSymlinkTargets(t *testing.T) {
	v := newVolume(t)
	targets := map[string]string{
		"t1":       "x",
		"t2":       "xy",
		"t3":       "xyz",
		"t4":       "wxyz",
		"t100":     namesXName("/abs/", 100),
		"t3037":    namesXName("rel/", 3037),
		"t3038":    namesXName("../", 3038),
		"t3039":    namesXName("../", 3039),
		"t3038-é":  namesXRunes("", 'é', 3038),
		"t-binary": "bin-\xff\xfe\x01\x7f",
		namesXL1:   namesXName("long-link-", 3038),
	}
	for name, target := range targets {
		if err := os.Symlink(target, v.path(name)); err != nil {
			t.Errorf("os.Symlink(%d-byte target) = %v, want nil", len(target), err)
		}
	}
	check := func() {
		t.Helper()
		for name, target := range targets {
			p := v.path(name)
			fi, err := os.Lstat(p)
			if err != nil || fi.Size() != int64(len(target)) {
				t.Errorf("os.Lstat(link to a %d-byte target) = %v, %v; want size %d", len(target), fi, err, len(target))
				continue
			}
			// ls reads with a buffer of st_size + 1.
			buf := make([]byte, fi.Size()+1)
			n, err := unix.Readlink(p, buf)
			if err != nil || string(buf[:n]) != target {
				t.Errorf("readlink(link to a %d-byte target, %d-byte buffer) = %d bytes, %v; want the target", len(target), len(buf), n, err)
			}
		}
		if ls, err := exec.LookPath("ls"); err == nil {
			r := runCommand(os.Environ(), v.mnt, ls, "-ln", "t3038", "t100", "t1")
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				f := strings.Fields(line)
				if len(f) < 9 {
					t.Errorf("ls -ln: %q", line)
					continue
				}
				if want := strconv.Itoa(len(targets[f[len(f)-3]])); f[4] != want {
					t.Errorf("ls -ln: %q: size %s, want %s", line, f[4], want)
				}
			}
			if r.code != 0 {
				t.Errorf("%v", r)
			}
		}
	}
	check()
	// Stored encrypted, within the backing 4095 bytes, and equal
	// targets stored differently.
	if err := os.Symlink(targets["t3038"], v.path("twin")); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, name := range []string{"t3038", "twin", "t100", namesXL1} {
		s, err := os.Readlink(namesXBacking(t, v, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(s) > 4095 || strings.Contains(s, "abs") || strings.Contains(s, "../") {
			t.Errorf("backing target of %s: %d bytes %q..., want at most 4095 encrypted bytes", namesXShort(name), len(s), s[:20])
		}
		if stored[s] {
			t.Errorf("two links store the same target %q...: equal targets must be stored differently", s[:20])
		}
		stored[s] = true
	}
	os.Remove(v.path("twin"))

	// Too long: refused, and nothing is left behind, under a short or a
	// long name.
	before := namesXBackingList(t, v.cipherDir)
	for _, target := range []string{namesXName("x", 3040), namesXRunes("", 'é', 3040), namesXName("y", 4000)} {
		for _, name := range []string{"too-long", namesXName("too-long-", 255)} {
			if err := os.Symlink(target, v.path(name)); errnoOf(err) != syscall.ENAMETOOLONG {
				t.Errorf("os.Symlink(%d-byte target, %d-byte name) = %v, want ENAMETOOLONG", len(target), len(name), err)
			}
			namesXLookupFails(t, v.path(name))
		}
	}
	if after := namesXBackingList(t, v.cipherDir); !slices.Equal(after, before) {
		t.Errorf("backing root after refused symlinks = %q, want it unchanged: %q", after, before)
	}
	namesXCheckBacking(t, v)
	v.remount()
	check()
}

// TestNamesXattrs checks extended attributes in user. and trusted. (stored
// encrypted) and security. (stored as they are). The cipher dir is on a
// tmpfs: ext4 refuses values larger than about a block.
func TestNamesXattrs(t *testing.T) {
	v := newVolume(t, cipherOnTmpfs())
	writeFile(t, v.path("file"), pattern("file", 100))
	if err := os.Mkdir(v.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, v.path(namesXL1), pattern("long", 100))
	attrs := map[string][]byte{
		"user.plain-attribute-name":       []byte("secret-value-a"),
		"user.empty":                      {},
		"user.binary":                     {0, 1, 2, 255, 0},
		"user.big":                        pattern("secret-value-big", 3000),
		"user." + namesXName("n", 162):    []byte("secret-value-167"), // 167 bytes
		"trusted." + namesXName("t", 156): []byte("secret-value-164"), // 164 bytes
		"user.max-value":                  pattern("secret-value-max", 65504),
	}
	targets := []string{"file", "dir", namesXL1}
	for _, f := range targets {
		p := v.path(f)
		for k, val := range attrs {
			if err := unix.Setxattr(p, k, val, 0); err != nil {
				t.Errorf("unix.Setxattr(%s, %d-byte %.20s..., %d bytes) = %v, want nil", namesXShort(f), len(k), k, len(val), err)
			}
		}
	}
	check := func() {
		t.Helper()
		for _, f := range targets {
			p := v.path(f)
			for k, val := range attrs {
				n, err := unix.Getxattr(p, k, nil)
				if err != nil || n != len(val) {
					t.Errorf("unix.Getxattr(%s, %.20s..., size query) = %d, %v; want %d", namesXShort(f), k, n, err, len(val))
				}
				buf := make([]byte, len(val)+10)
				n, err = unix.Getxattr(p, k, buf)
				if err != nil || !bytes.Equal(buf[:max(n, 0)], val) {
					t.Errorf("unix.Getxattr(%s, %.20s...) = %d bytes, %v; want %d bytes", namesXShort(f), k, n, err, len(val))
				}
				if len(val) > 0 {
					if n, err := unix.Getxattr(p, k, make([]byte, len(val)-1)); errnoOf(err) != syscall.ERANGE {
						t.Errorf("unix.Getxattr(%s, %.20s..., %d-byte buffer) = %d, %v; want ERANGE", namesXShort(f), k, len(val)-1, n, err)
					}
				}
			}
			list := namesXListXattrs(t, p)
			for k := range attrs {
				if !slices.Contains(list, k) {
					t.Errorf("unix.Listxattr(%s) = %q, want it to list %.20s...", namesXShort(f), list, k)
				}
			}
			if size, err := unix.Listxattr(p, nil); err == nil && size > 0 {
				if n, err := unix.Listxattr(p, make([]byte, size-1)); errnoOf(err) != syscall.ERANGE {
					t.Errorf("unix.Listxattr(%s, %d-byte buffer of %d) = %d, %v; want ERANGE", namesXShort(f), size-1, size, n, err)
				}
			}
		}
	}
	check()

	p := v.path("file")
	// XATTR_CREATE and XATTR_REPLACE.
	if err := unix.Setxattr(p, "user.plain-attribute-name", []byte("x"), unix.XATTR_CREATE); errnoOf(err) != syscall.EEXIST {
		t.Errorf("unix.Setxattr(XATTR_CREATE, existing) = %v, want EEXIST", err)
	}
	if err := unix.Setxattr(p, "user.missing", []byte("x"), unix.XATTR_REPLACE); errnoOf(err) != syscall.ENODATA {
		t.Errorf("unix.Setxattr(XATTR_REPLACE, missing) = %v, want ENODATA", err)
	}
	if err := unix.Setxattr(p, "user.created", []byte("new"), unix.XATTR_CREATE); err != nil {
		t.Errorf("unix.Setxattr(XATTR_CREATE, missing) = %v, want nil", err)
	}
	if err := unix.Setxattr(p, "user.created", []byte("replaced"), unix.XATTR_REPLACE); err != nil {
		t.Errorf("unix.Setxattr(XATTR_REPLACE, existing) = %v, want nil", err)
	}
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(p, "user.created", buf); err != nil || string(buf[:n]) != "replaced" {
		t.Errorf("unix.Getxattr(user.created) = %q, %v; want \"replaced\"", buf[:max(n, 0)], err)
	}
	if err := unix.Removexattr(p, "user.created"); err != nil {
		t.Errorf("unix.Removexattr(user.created) = %v, want nil", err)
	}
	if _, err := unix.Getxattr(p, "user.created", buf); errnoOf(err) != syscall.ENODATA {
		t.Errorf("unix.Getxattr(removed) = %v, want ENODATA", err)
	}
	if err := unix.Removexattr(p, "user.created"); errnoOf(err) != syscall.ENODATA {
		t.Errorf("unix.Removexattr(removed) = %v, want ENODATA", err)
	}
	if slices.Contains(namesXListXattrs(t, p), "user.created") {
		t.Errorf("unix.Listxattr lists a removed attribute")
	}

	// Limits: names of more than 167 (user.) and 164 (trusted.) bytes,
	// values of more than 65504 bytes.
	for _, k := range []string{"user." + namesXName("n", 163), "user." + namesXName("n", 200), "user." + namesXName("n", 250), "trusted." + namesXName("t", 157)} {
		if err := unix.Setxattr(p, k, []byte("x"), 0); errnoOf(err) != syscall.ERANGE {
			t.Errorf("unix.Setxattr(%d-byte name) = %v, want ERANGE", len(k), err)
		}
		if _, err := unix.Getxattr(p, k, buf); errnoOf(err) != syscall.ENODATA {
			t.Errorf("unix.Getxattr(%d-byte name) = %v, want ENODATA", len(k), err)
		}
		if err := unix.Removexattr(p, k); errnoOf(err) != syscall.ENODATA {
			t.Errorf("unix.Removexattr(%d-byte name) = %v, want ENODATA", len(k), err)
		}
	}
	if err := unix.Setxattr(p, "user.too-big", make([]byte, 65505), 0); errnoOf(err) != syscall.E2BIG {
		t.Errorf("unix.Setxattr(65505-byte value) = %v, want E2BIG", err)
	}

	// security. is stored as it is (the kernel reads it).
	secErr := unix.Setxattr(p, "security.kmsfs-test", []byte("security-value"), 0)
	if secErr != nil {
		t.Logf("unix.Setxattr(security.kmsfs-test) = %v: not checked", secErr)
	}

	// The backing files hold no plaintext name or value in user. or
	// trusted.
	for _, f := range targets {
		b := namesXBacking(t, v, f)
		for k, val := range namesXBackingXattrs(t, b) {
			switch {
			case strings.HasPrefix(k, "user."), strings.HasPrefix(k, "trusted."):
				if !strings.HasPrefix(k, "user.kmsfs.") && !strings.HasPrefix(k, "trusted.kmsfs.") {
					t.Errorf("backing attribute %q of %s is not encrypted", k, namesXShort(f))
				}
				if bytes.Contains(val, []byte("secret-value")) {
					t.Errorf("backing attribute %q of %s holds its plaintext value", k, namesXShort(f))
				}
				if strings.Contains(k, "plain-attribute") {
					t.Errorf("backing attribute %q holds its plaintext name", k)
				}
			case k == "security.kmsfs-test":
				if string(val) != "security-value" {
					t.Errorf("backing security.kmsfs-test = %q, want \"security-value\" in clear", val)
				}
			}
		}
	}
	if secErr == nil {
		if got := namesXBackingXattrs(t, namesXBacking(t, v, "file"))["security.kmsfs-test"]; string(got) != "security-value" {
			t.Errorf("backing security.kmsfs-test = %q, want \"security-value\" in clear", got)
		}
		n, err := unix.Getxattr(p, "security.kmsfs-test", buf)
		if err != nil || string(buf[:n]) != "security-value" {
			t.Errorf("unix.Getxattr(security.kmsfs-test) = %q, %v", buf[:max(n, 0)], err)
		}
	}
	v.remount()
	check()
}

// namesXReserved are names of kmsfs's own files: in an encrypted-names
// volume they are ordinary names, in the root as anywhere.
var namesXReserved = []string{
	"kmsfs.conf", "kmsfs.journal", "kmsfs.dirid", "kmsfs.conf.tmp", "kmsfs.reencrypt.1",
	"kmsfs.long.AAAA", "kmsfs.long.AAAA.name",
}

func TestNamesReservedNames(t *testing.T) {
	v := newVolume(t)
	conf, err := os.ReadFile(filepath.Join(v.cipherDir, confName))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "sub", "sub/deeper"} {
		if d != "" {
			if err := os.Mkdir(v.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i, n := range namesXReserved {
			p := v.path(path.Join(d, n))
			if err := os.WriteFile(p, []byte(fmt.Sprintf("user's %s in %q (%d)", n, d, i)), 0o644); err != nil {
				t.Errorf("creating %s in %q = %v, want nil", n, d, err)
			}
		}
	}
	// A directory named kmsfs.dirid, holding one.
	if err := os.Mkdir(v.path("sub/deeper/kmsfs.dirid.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(v.path("sub/deeper/kmsfs.dirid.d"), v.path("sub/kmsfs.dirid.d")); err != nil {
		t.Errorf("os.Rename = %v", err)
	}
	if err := os.Mkdir(v.path("other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.path("other/kmsfs.dirid"), 0o755); err != nil {
		t.Errorf("os.Mkdir(other/kmsfs.dirid) = %v, want nil", err)
	}
	writeFile(t, v.path("other/kmsfs.dirid/kmsfs.dirid"), []byte("nested"))
	// Renamed over each other, and removed.
	if err := os.Rename(v.path("sub/kmsfs.conf"), v.path("sub/kmsfs.journal")); err != nil {
		t.Errorf("os.Rename(sub/kmsfs.conf, sub/kmsfs.journal) = %v, want nil", err)
	}
	if err := os.Remove(v.path("sub/deeper/kmsfs.dirid")); err != nil {
		t.Errorf("unlink(sub/deeper/kmsfs.dirid) = %v, want nil", err)
	}
	check := func() {
		t.Helper()
		namesXExpectList(t, v.mnt, append(slices.Clone(namesXReserved), "sub", "other")...)
		subWant := append([]string{"deeper", "kmsfs.dirid.d"}, slices.DeleteFunc(slices.Clone(namesXReserved), func(n string) bool { return n == "kmsfs.conf" })...)
		namesXExpectList(t, v.path("sub"), subWant...)
		namesXExpectList(t, v.path("sub/deeper"), slices.DeleteFunc(slices.Clone(namesXReserved), func(n string) bool { return n == "kmsfs.dirid" })...)
		namesXExpectList(t, v.path("other"), "kmsfs.dirid")
		namesXExpectList(t, v.path("other/kmsfs.dirid"), "kmsfs.dirid")
		for i, n := range namesXReserved {
			for _, d := range []string{"", "sub", "sub/deeper"} {
				want := fmt.Sprintf("user's %s in %q (%d)", n, d, i)
				switch {
				case d == "sub" && n == "kmsfs.conf", d == "sub/deeper" && n == "kmsfs.dirid":
					continue
				case d == "sub" && n == "kmsfs.journal":
					want = fmt.Sprintf("user's kmsfs.conf in %q (0)", d)
				}
				if got, err := os.ReadFile(v.path(path.Join(d, n))); err != nil || string(got) != want {
					t.Errorf("os.ReadFile(%s) = %q, %v; want %q", path.Join(d, n), got, err, want)
				}
			}
		}
		if got, err := os.ReadFile(v.path("other/kmsfs.dirid/kmsfs.dirid")); err != nil || string(got) != "nested" {
			t.Errorf("os.ReadFile(other/kmsfs.dirid/kmsfs.dirid) = %q, %v", got, err)
		}
	}
	check()
	if got, err := os.ReadFile(filepath.Join(v.cipherDir, confName)); err != nil || !bytes.Equal(got, conf) {
		t.Errorf("backing %s changed by creating files named like it (%v)", confName, err)
	}
	namesXCheckBacking(t, v)
	snap := namesXSnapshot(t, v.mnt)
	v.remount()
	check()
	namesXCompare(t, "tree after a remount", namesXSnapshot(t, v.mnt), snap)
}

// TestNamesBackingHidesNames checks that the backing directory shows no
// name, symlink target or extended attribute in clear, and that equal
// names in two directories are stored differently.
func TestNamesBackingHidesNames(t *testing.T) {
	v := newVolume(t)
	mk := func(d string) {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk("secret-dir-name")
	mk("secret-dir-name/secret-subdir-name")
	writeFile(t, v.path("secret-file-name"), []byte("x"))
	writeFile(t, v.path("secret-dir-name/"+namesXName("secret-long-name-", 255)), []byte("x"))
	writeFile(t, v.path("secret-dir-name/secret-subdir-name/secret-deep-name"), []byte("x"))
	for _, l := range []string{"secret-link-name", "secret-dir-name/secret-link-2"} {
		if err := os.Symlink("secret-target-text", v.path(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Setxattr(v.path("secret-file-name"), "user.secret-attr-name", []byte("secret-attr-value"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(v.path("secret-dir-name"), "user.secret-attr-name", []byte("secret-attr-value"), 0); err != nil {
		t.Fatal(err)
	}
	// The same name in two directories.
	writeFile(t, v.path("twin"), []byte("1"))
	writeFile(t, v.path("secret-dir-name/twin"), []byte("2"))
	if a, b := filepath.Base(namesXBacking(t, v, "twin")), filepath.Base(namesXBacking(t, v, "secret-dir-name/twin")); a == b {
		t.Errorf("\"twin\" in two directories has the same backing name %q; names must be bound to their directory", a)
	}
	namesXCheckBacking(t, v)
	targets := map[string]bool{}
	namesXWalk(t, v.cipherDir, func(dirfd int, dir, name string, st *unix.Stat_t) {
		rel := path.Join(dir, name)
		if strings.Contains(name, "secret") {
			t.Errorf("backing name %s holds a name in clear", namesXShort(rel))
		}
		if own := namesXOwn(name) || namesXIsLong(name) || (dir == "" && strings.HasPrefix(name, "kmsfs.")); !own {
			for _, r := range name {
				if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
					t.Errorf("backing name %s is not base64url", namesXShort(rel))
					break
				}
			}
		}
		p := filepath.Join(v.cipherDir, rel)
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			s, err := os.Readlink(p)
			if err != nil || strings.Contains(s, "secret") {
				t.Errorf("backing symlink %s: target %q, %v; want it encrypted", namesXShort(rel), s, err)
			}
			if targets[s] {
				t.Errorf("two symlinks to the same target store the same %q", s)
			}
			targets[s] = true
			return
		}
		for k, val := range namesXBackingXattrs(t, p) {
			if strings.Contains(k, "secret") || bytes.Contains(val, []byte("secret")) {
				t.Errorf("backing attribute %q of %s = %q: want name and value encrypted", k, namesXShort(rel), val)
			}
		}
	})
}

// TestNamesPlaintext checks a volume made with "kmsfs init
// --plaintext-names": names, targets and attributes in clear, no
// directory IDs, and kmsfs's own names refused in the root as in
// version 1.
func TestNamesPlaintext(t *testing.T) {
	v := newVolume(t, withInitArgs("--plaintext-names"))
	long := namesXName("plain-", 255)
	for _, d := range []string{"dir", "dir/sub", long} {
		if err := os.Mkdir(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a.txt", "dir/b", "dir/sub/" + long, long + "/c", "dir/kmsfs.conf", "dir/kmsfs.dirid", "dir/kmsfs.journal"} {
		writeFile(t, v.path(f), []byte("content of "+f))
	}
	if err := os.Symlink("target-text", v.path("dir/lnk")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(v.path("a.txt"), "user.attr", []byte("attr-value"), 0); err != nil {
		t.Fatal(err)
	}
	// kmsfs's own names in the root.
	for _, n := range []string{"kmsfs.conf", "kmsfs.journal", "kmsfs.conf.tmp"} {
		if err := os.WriteFile(v.path(n), []byte("x"), 0o644); errnoOf(err) != syscall.EPERM {
			t.Errorf("creating %s in the root = %v, want EPERM", n, err)
		}
		if err := os.Mkdir(v.path(n), 0o755); errnoOf(err) != syscall.EPERM {
			t.Errorf("os.Mkdir(%s) in the root = %v, want EPERM", n, err)
		}
		if err := os.Symlink("t", v.path(n)); errnoOf(err) != syscall.EPERM {
			t.Errorf("os.Symlink(%s) in the root = %v, want EPERM", n, err)
		}
		if err := os.Rename(v.path("a.txt"), v.path(n)); errnoOf(err) != syscall.EPERM {
			t.Errorf("os.Rename(a.txt, %s) in the root = %v, want EPERM", n, err)
		}
		namesXLookupFails(t, v.path(n))
	}
	if err := os.WriteFile(v.path(namesX256), nil, 0o644); errnoOf(err) != syscall.ENAMETOOLONG {
		t.Errorf("creating a 256-byte name = %v, want ENAMETOOLONG", err)
	}
	check := func() {
		t.Helper()
		// The same names through the mount and in the backing directory.
		mount := map[string]bool{}
		namesXWalk(t, v.mnt, func(_ int, dir, name string, _ *unix.Stat_t) { mount[path.Join(dir, name)] = true })
		back := map[string]bool{}
		namesXWalk(t, v.cipherDir, func(_ int, dir, name string, _ *unix.Stat_t) {
			if dir == "" && strings.HasPrefix(name, "kmsfs.") {
				return
			}
			back[path.Join(dir, name)] = true
			if name == namesXDirID && dir != "dir" {
				t.Errorf("backing %s: a plaintext-names volume has no directory IDs", path.Join(dir, name))
			}
		})
		for p := range mount {
			if !back[p] {
				t.Errorf("%s is seen through the mount but has no backing entry of that name", namesXShort(p))
			}
		}
		for p := range back {
			if !mount[p] {
				t.Errorf("backing %s is not seen through the mount", namesXShort(p))
			}
		}
		if s, err := os.Readlink(filepath.Join(v.cipherDir, "dir/lnk")); err != nil || s != "target-text" {
			t.Errorf("backing target of dir/lnk = %q, %v; want it in clear", s, err)
		}
		if got := namesXBackingXattrs(t, filepath.Join(v.cipherDir, "a.txt"))["user.attr"]; string(got) != "attr-value" {
			t.Errorf("backing user.attr of a.txt = %q, want it in clear", got)
		}
		if got, err := os.ReadFile(v.path("dir/kmsfs.conf")); err != nil || string(got) != "content of dir/kmsfs.conf" {
			t.Errorf("os.ReadFile(dir/kmsfs.conf) = %q, %v", got, err)
		}
		if fi, err := os.Lstat(v.path("dir/lnk")); err != nil || fi.Size() != int64(len("target-text")) {
			t.Errorf("os.Lstat(dir/lnk) = %v, %v; want size %d", fi, err, len("target-text"))
		}
	}
	check()
	v.remount()
	check()
}
