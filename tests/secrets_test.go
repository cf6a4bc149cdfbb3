package tests

// Secrets: key files and the volume configuration are private (0600), a
// key file others can read is refused, core dumps are off in the daemon,
// and nothing the daemon or the commands print — at any log level — holds
// a key (master keys, data keys, content keys, in any common encoding), a
// passphrase or file contents.
//
// To know the keys to look for, the test derives them from the key files
// and the backing files following docs/FORMAT.md.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"golang.org/x/crypto/scrypt"
)

// secretsXUnit is the repeated unit of the plaintext the log test writes.
// Every window of 6 bytes of that plaintext is a rotation of it, so a log
// holding any 6 consecutive bytes of it is caught.
const secretsXUnit = "QvZkXw"

// secretsXMarker is a longer plaintext marker, written too.
const secretsXMarker = "kmsfs-secret-plaintext-marker"

// secretsXMode checks the permission bits of path.
func secretsXMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("os.Stat(%s) = %v", path, err)
	} else if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %04o, want %04o", path, got, want)
	}
}

// secretsXMasterKey reads the master key of a local key file
// (docs/FORMAT.md, "Local keyring key file"), unsealing it with pass if
// it is sealed.
func secretsXMasterKey(t *testing.T, path, pass string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		KDF    string `json:"kdf"`
		Key    string `json:"key"`
		Sealed string `json:"sealed"`
		Scrypt struct {
			N, R, P int
			Salt    string
		} `json:"scrypt"`
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatalf("key file %s: %v", path, err)
	}
	switch kf.KDF {
	case "none":
		k, err := base64.StdEncoding.DecodeString(kf.Key)
		if err != nil || len(k) != 32 {
			t.Fatalf("key file %s: key %d bytes, %v", path, len(k), err)
		}
		return k
	case "scrypt":
		salt, err1 := base64.StdEncoding.DecodeString(kf.Scrypt.Salt)
		sealed, err2 := base64.StdEncoding.DecodeString(kf.Sealed)
		if err1 != nil || err2 != nil || len(sealed) < 12 {
			t.Fatalf("key file %s: bad salt or sealed key", path)
		}
		kek, err := scrypt.Key([]byte(pass), salt, kf.Scrypt.N, kf.Scrypt.R, kf.Scrypt.P, 32)
		if err != nil {
			t.Fatal(err)
		}
		k, err := secretsXGCM(kek).Open(nil, sealed[:12], sealed[12:], []byte("kmsfs local key v1"))
		if err != nil || len(k) != 32 {
			t.Fatalf("unsealing %s: %d bytes, %v", path, len(k), err)
		}
		return k
	}
	t.Fatalf("key file %s: kdf %q", path, kf.KDF)
	return nil
}

func secretsXGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// secretsXSlot is a key slot of a header copy.
type secretsXSlot struct {
	uri          string
	ctx, wrapped []byte
}

// secretsXHeaderLen returns the length of the header of a backing file
// and the size of its copies, from its preamble (docs/FORMAT.md,
// "Header" and "Header (version 3)"): 4096 and 2032 for version 1
// (kmsfs.conf, the files of format versions 1 and 2), 32 + 2*C and C for
// version 3, whose copy size C is the u16 at bytes 9..10.
func secretsXHeaderLen(t *testing.T, b []byte) (hl, copyLen int) {
	t.Helper()
	if len(b) < 32 {
		t.Fatalf("backing file of %d bytes has no header", len(b))
	}
	switch v := binary.BigEndian.Uint16(b[6:8]); v {
	case 1:
		hl, copyLen = headerSize, 2032
	case 3:
		copyLen = int(binary.BigEndian.Uint16(b[9:11]))
		hl = 32 + 2*copyLen
	default:
		t.Fatalf("backing file with a header of version %d", v)
	}
	if len(b) < hl {
		t.Fatalf("backing file of %d bytes has no header (%d bytes)", len(b), hl)
	}
	return hl, copyLen
}

// secretsXSlots returns the file ID and the key slots of header copy 0
// of a backing file (of any format version).
func secretsXSlots(t *testing.T, b []byte) ([]byte, []secretsXSlot) {
	t.Helper()
	_, copyLen := secretsXHeaderLen(t, b)
	fileID := b[16:32]
	c := b[32 : 32+copyLen]
	n := int(c[8])
	p := 9
	field := func() []byte {
		l := int(binary.BigEndian.Uint16(c[p:]))
		f := c[p+2 : p+2+l]
		p += 2 + l
		return f
	}
	var slots []secretsXSlot
	for range n {
		s := secretsXSlot{uri: string(field())}
		s.ctx = field()
		s.wrapped = field()
		slots = append(slots, s)
	}
	return fileID, slots
}

// secretsXFileKeys returns the data key and the content key of a backing
// file, unwrapping the slot of the local key file keyURI with master.
func secretsXFileKeys(t *testing.T, backing, keyURI string, master []byte) (dk, ck []byte) {
	t.Helper()
	b, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	fileID, slots := secretsXSlots(t, b)
	for _, s := range slots {
		if s.uri != keyURI {
			continue
		}
		// 0x01 || key_id (8) || nonce (12) || GCM(KEK', nonce, DK, AD)
		kek, err := hkdf.Key(sha256.New, master, nil, "kmsfs local wrap v1", 32)
		if err != nil {
			t.Fatal(err)
		}
		w := s.wrapped
		ad := append([]byte("kmsfs local v1"), s.ctx...)
		dk, err = secretsXGCM(kek).Open(nil, w[9:21], w[21:], ad)
		if err != nil {
			t.Fatalf("unwrapping the data key of %s: %v", backing, err)
		}
		ck, err = hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 content key", 32)
		if err != nil {
			t.Fatal(err)
		}
		// Check the derivation: block 0 must open with the content key.
		secretsXCheckBlock0(t, backing, b, fileID, ck)
		return dk, ck
	}
	t.Fatalf("%s has no slot for %s", backing, keyURI)
	return nil, nil
}

// secretsXCheckBlock0 checks that the first block of the backing file b
// (its content if it is an inline file of version 3) opens with the
// content key ck: the test derived the key right.
func secretsXCheckBlock0(t *testing.T, backing string, b, fileID, ck []byte) {
	t.Helper()
	hl, _ := secretsXHeaderLen(t, b)
	if hl == headerSize {
		// Version 1: block 0 is nonce || ciphertext || tag right after
		// the header, with AD = file ID || u64(0).
		if len(b) > headerSize+28 {
			blk := b[headerSize:min(len(b), headerSize+int(1)<<b[8]+blockOverhead)]
			ad := binary.BigEndian.AppendUint64(bytes.Clone(fileID), 0)
			if _, err := secretsXGCM(ck).Open(nil, blk[:12], blk[12:], ad); err != nil {
				t.Fatalf("block 0 of %s does not open with the content key the test derived: %v", backing, err)
			}
		}
		return
	}
	// Version 3: AD(x, kind) = file ID || u64(x) || u8(kind).
	ad3 := func(x uint64, kind byte) []byte {
		return append(binary.BigEndian.AppendUint64(bytes.Clone(fileID), x), kind)
	}
	c := int64(len(b))
	switch {
	case c == int64(hl):
		// A header alone: an empty file, nothing sealed.
	case c < 4096:
		// Inline: nonce || GCM(CK, nonce, plaintext, AD(0, 3)) after the
		// header.
		in := b[hl:]
		if _, err := secretsXGCM(ck).Open(nil, in[:12], in[12:], ad3(0, 3)); err != nil {
			t.Fatalf("the inline content of %s does not open with the content key the test derived: %v", backing, err)
		}
	default:
		// Paged: block 0's ciphertext at 4096, its entry nonce || tag
		// after the two size records; sealed with AD(0, 0), or a hole
		// (empty plaintext, AD(0, 1)).
		l, err := blockcipher.NewLayout3(1<<b[8], hl)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := l.PlainSize(c)
		if err != nil {
			t.Fatalf("backing file %s of %d bytes: %v", backing, c, err)
		}
		e := b[l.EntryOff(0) : l.EntryOff(0)+28]
		ct := b[l.DataOff(0) : l.DataOff(0)+min(int64(l.BlockSize), plain)]
		_, err = secretsXGCM(ck).Open(nil, e[:12], append(bytes.Clone(ct), e[12:]...), ad3(0, 0))
		if err != nil {
			if _, herr := secretsXGCM(ck).Open(nil, e[:12], e[12:], ad3(0, 1)); herr != nil {
				t.Fatalf("block 0 of %s opens with the content key the test derived neither as data (%v) nor as a hole (%v)", backing, err, herr)
			}
		}
	}
}

// secretsXForms are the ways a key may appear in text.
func secretsXForms(key []byte) []string {
	return []string{
		string(key),
		hex.EncodeToString(key),
		strings.ToUpper(hex.EncodeToString(key)),
		base64.StdEncoding.EncodeToString(key),
		base64.RawStdEncoding.EncodeToString(key),
		base64.URLEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key),
		fmt.Sprint(key),                               // [1 2 3 ...]
		strings.Trim(strconv.Quote(string(key)), `"`), // "\x01\x02..."
		hex.EncodeToString(key[:12]),                  // a prefix in hex is a leak too
	}
}

// secretsXSearch reports every secret that occurs in any of the texts.
func secretsXSearch(t *testing.T, texts map[string][]byte, secrets map[string][]string) {
	t.Helper()
	for where, text := range texts {
		for what, forms := range secrets {
			for _, f := range forms {
				if i := bytes.Index(text, []byte(f)); i >= 0 {
					from := max(0, i-100)
					t.Errorf("%s contains %s (as %q) at byte %d: ...%q...", where, what, f, i, text[from:min(len(text), i+len(f)+20)])
					break
				}
			}
		}
	}
}

// secretsXRotations are the 6-byte windows of the repeated unit.
func secretsXRotations() []string {
	var r []string
	for i := range len(secretsXUnit) {
		r = append(r, secretsXUnit[i:]+secretsXUnit[:i])
	}
	return r
}

func TestSecrets(t *testing.T) {
	t.Run("modes", func(t *testing.T) {
		v := newVolume(t, notMounted())
		secretsXMode(t, v.keyPath, 0o600)
		secretsXMode(t, v.backing(confName), 0o600)
		// The default key, made by init under a umask that hides
		// nothing.
		dir := filepath.Join(v.dir, "default")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		r := runCommand(v.env(), v.dir, "sh", "-c", `umask 000 && exec "$0" init "$1"`, kmsfsBin, dir)
		if r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
		def := filepath.Join(v.home, ".config", "kmsfs", "local.key")
		secretsXMode(t, def, 0o600)
		secretsXMode(t, filepath.Dir(def), 0o700)
		secretsXMode(t, filepath.Join(dir, confName), 0o600)
	})

	t.Run("key file open to others", func(t *testing.T) {
		v := newVolume(t, notMounted())
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
			if err := os.Chmod(v.keyPath, mode); err != nil {
				t.Fatal(err)
			}
			r := envXRun(v.env(), kmsfsBin, v.mountCommand()...)
			envXCheckError(t, r, []int{exitNoKey}, v.keyPath)
			if !strings.Contains(r.stderr, "chmod 600 "+v.keyPath) && !strings.Contains(r.stderr, "chmod 0600 "+v.keyPath) {
				t.Errorf("%v\nmode %04o: want a hint to chmod 600 %s", r, mode, v.keyPath)
			}
			if isMounted(v.mnt) {
				t.Fatalf("mode %04o: the volume was mounted with a key file open to others", mode)
			}
		}
		if err := os.Chmod(v.keyPath, 0o600); err != nil {
			t.Fatal(err)
		}
		v.mount()
	})

	t.Run("core dumps off", func(t *testing.T) {
		v := newVolume(t)
		if len(v.daemons) != 1 {
			t.Fatalf("daemonsOf(%s) = %v, want one daemon", v.mnt, v.daemons)
		}
		p := fmt.Sprintf("/proc/%d/limits", v.daemons[0])
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "Max core file size"); ok {
				found = true
				f := strings.Fields(rest)
				if len(f) < 2 || f[0] != "0" {
					t.Errorf("%s: %q, want a soft limit of 0", p, l)
				}
				t.Logf("daemon: %s", strings.Join(strings.Fields(l), " "))
			}
		}
		if !found {
			t.Errorf("%s has no \"Max core file size\" line:\n%s", p, b)
		}
	})

	for _, kind := range []string{"plain key", "passphrase"} {
		t.Run("logs/"+kind, func(t *testing.T) {
			testSecretsLogs(t, kind == "passphrase")
		})
	}
}

// testSecretsLogs runs a workload with --debug on a volume with two keys,
// with errors (a damaged block, a damaged key slot), and searches
// everything the commands and the daemon printed for secrets.
func testSecretsLogs(t *testing.T, withPass bool) {
	const pass = "correct-horse-battery-staple-9F3k"
	keyB := filepath.Join(t.TempDir(), "b.key")
	var opts []volumeOption
	passFile := ""
	if withPass {
		passFile = filepath.Join(t.TempDir(), "pass")
		if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		opts = append(opts, withInitArgs("--passphrase-file", passFile), withMountArgs("--passphrase-file", passFile))
	}
	opts = append(opts, notMounted(), withInitArgs("--key", "local://"+keyB), withMountArgs("--debug"))
	v := newVolume(t, opts...)
	outputs := map[string][]byte{}
	d := stressXMount(t, v)

	// The workload: writes of many sizes and offsets (so WRITE requests
	// start at every phase of the unit), reads, a truncate, a rename.
	plain := bytes.Repeat([]byte(secretsXUnit), 200<<10/len(secretsXUnit))
	copy(plain[5000:], secretsXMarker)
	writeFile(t, v.path("big"), plain)
	f, err := os.OpenFile(v.path("pieces"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		off := (i * 7919) % 50000
		if _, err := f.WriteAt(plain[i:i+1+i*97], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	checkContent(t, v.path("big"), plain, v.blockSize)
	readFile(t, v.path("pieces"))
	if err := os.Truncate(v.path("big"), 100000); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(v.path("big"), v.path("big2")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, v.path("tampered-block"), plain[:20000])
	writeFile(t, v.path("tampered-slot"), plain[:3000])
	// Backing paths, taken while the mount can name them (the test
	// process cannot open a key sealed by a passphrase).
	backs := map[string]string{}
	for _, name := range []string{"big2", "pieces", "tampered-block", "tampered-slot", confName} {
		backs[name] = v.backing(name)
	}
	if err := v.unmountErr(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	outputs["the daemon's stderr (--debug, first mount)"] = bytes.Clone(d.stderr.Bytes())

	// The secrets, taken before damaging the files.
	masterA := secretsXMasterKey(t, v.keyPath, pass)
	masterB := secretsXMasterKey(t, keyB, pass)
	if !withPass {
		// The search finds what it looks for: the key file holds its
		// key in base64.
		kf, _ := os.ReadFile(v.keyPath)
		if !bytes.Contains(kf, []byte(base64.StdEncoding.EncodeToString(masterA))) {
			t.Fatalf("the master key the test read from %s is not in it in base64", v.keyPath)
		}
	}
	secrets := map[string][]string{
		"the master key of " + v.keyPath: secretsXForms(masterA),
		"the master key of " + keyB:      secretsXForms(masterB),
		"plaintext":                      append(secretsXRotations(), secretsXMarker),
	}
	if withPass {
		secrets["the passphrase"] = []string{pass}
	}
	for _, name := range []string{"big2", "pieces", "tampered-block", "tampered-slot", confName} {
		dk, ck := secretsXFileKeys(t, backs[name], v.keyURI, masterA)
		secrets["the data key of "+name] = secretsXForms(dk)
		secrets["the content key of "+name] = secretsXForms(ck)
	}

	// Damage: a block (reads fail with EIO and are logged), and the
	// wrapped key of the first slot in header copy 0 (the file opens with
	// copy 1). Key file A is moved away for the next mount: its slots
	// fail, the daemon logs that, and files open with key B.
	b, err := os.ReadFile(backs["tampered-block"])
	if err != nil {
		t.Fatal(err)
	}
	// A byte of block 0's ciphertext (in version 2, past its nonce).
	b[v.blockOffset(t, 0)+100] ^= 1
	if err := os.WriteFile(backs["tampered-block"], b, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(backs["tampered-slot"])
	if err != nil {
		t.Fatal(err)
	}
	// Copy 0: sequence (8), count (1), then slot 0's URI, context and
	// wrapped key; flip the last byte of the wrapped key.
	p := 32 + 9
	for range 3 {
		l := int(binary.BigEndian.Uint16(b[p:]))
		p += 2 + l
	}
	b[p-1] ^= 1
	if err := os.WriteFile(backs["tampered-slot"], b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(v.keyPath, v.keyPath+".moved"); err != nil {
		t.Fatal(err)
	}

	d = stressXMount(t, v)
	if _, err := os.ReadFile(v.path("tampered-block")); errnoOf(err) == 0 {
		t.Errorf("os.ReadFile(tampered-block) = %v, want EIO", err)
	}
	readFile(t, v.path("tampered-slot"))
	checkContent(t, v.path("big2"), plain[:100000], v.blockSize)
	if err := v.unmountErr(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	outputs["the daemon's stderr (--debug, second mount)"] = bytes.Clone(d.stderr.Bytes())
	if err := os.Rename(v.keyPath+".moved", v.keyPath); err != nil {
		t.Fatal(err)
	}

	// And a background mount (its stderr is not a terminal) and the
	// commands' own output.
	r := v.kmsfs(v.mountCommand()...)
	if r.code != 0 {
		t.Fatalf("%v\nwant exit 0", r)
	}
	v.mounted, v.daemons = true, daemonsOf(v.mnt)
	readFile(t, v.path("pieces"))
	outputs["kmsfs mount (background)"] = []byte(r.stdout + r.stderr)
	if err := v.unmountErr(); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(v.logFile)
	if err != nil {
		t.Fatal(err)
	}
	outputs["the daemon's --log-file"] = log
	if !bytes.Contains(log, []byte("tampered-block")) {
		t.Errorf("the daemon's log does not name tampered-block, whose block failed:\n%s", log)
	}
	// --debug request lines go where the daemon logs (here --log-file).
	if !bytes.Contains(log, []byte("rx ")) && !bytes.Contains(outputs["the daemon's stderr (--debug, first mount)"], []byte("rx ")) {
		t.Errorf("--debug logged no FUSE requests, neither in the log file nor on stderr")
	}
	secretsXSearch(t, outputs, secrets)
}
