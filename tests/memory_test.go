package tests

// Keys in memory: once a file is closed, no copy of its data key,
// content key or header MAC key is left in the daemon's memory outside
// memguard's locked pages, and the local key-wrapping key (and the
// master key it comes from) is never there at all. The test reads the
// daemon's memory through /proc/PID/mem, with keys it derives itself
// from the key file and the backing files (docs/FORMAT.md), the way an
// attacker holding a core dump or a swap image would look.

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memXRegion is one mapping of a process.
type memXRegion struct {
	start, end uint64
	name       string
	locked     bool // VmFlags has "lo": mlock'ed (memguard)
}

// memXRegions returns the readable private mappings of pid.
func memXRegions(t *testing.T, pid int) []memXRegion {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var regs []memXRegion
	var cur *memXRegion
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && len(fields[1]) == 4 {
			cur = nil
			perms := fields[1]
			name := ""
			if len(fields) >= 6 {
				name = fields[5]
			}
			if perms[0] != 'r' || name == "[vvar]" || name == "[vsyscall]" || name == "[vvar_vclock]" {
				continue
			}
			lo, hi, _ := strings.Cut(fields[0], "-")
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("smaps line %q", line)
			}
			regs = append(regs, memXRegion{start: s, end: e, name: name})
			cur = &regs[len(regs)-1]
			continue
		}
		if cur != nil && len(fields) > 0 && fields[0] == "VmFlags:" {
			for _, fl := range fields[1:] {
				if fl == "lo" {
					cur.locked = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return regs
}

// memXNeedle is a byte string to look for, and what it is.
type memXNeedle struct {
	what string
	b    []byte
}

// memXNeedles returns the ways key k (32 bytes) may sit in memory: any
// 16-byte half or middle of it (an AES-256 key schedule starts with the
// key, the decryption schedule ends with its first half), the same with
// every 32-bit word byte-swapped (the generic AES code keeps words), and
// the key XORed with HMAC's inner and outer pads.
func memXNeedles(what string, k []byte) []memXNeedle {
	var ns []memXNeedle
	add := func(form string, b []byte) {
		for i := 0; i+16 <= len(b); i += 8 {
			ns = append(ns, memXNeedle{fmt.Sprintf("%s (%s, bytes %d-%d)", what, form, i, i+15), b[i : i+16]})
		}
	}
	add("raw", k)
	sw := make([]byte, len(k))
	for i := 0; i+4 <= len(k); i += 4 {
		binary.LittleEndian.PutUint32(sw[i:], binary.BigEndian.Uint32(k[i:]))
	}
	add("byte-swapped words", sw)
	for _, pad := range []byte{0x36, 0x5c} {
		x := bytes.Clone(k)
		for i := range x {
			x[i] ^= pad
		}
		add(fmt.Sprintf("XOR %#x", pad), x)
	}
	return ns
}

// memXHit is a needle found in a region.
type memXHit struct {
	what   string
	addr   uint64
	region memXRegion
}

// memXScan reads every region of pid and returns where each needle
// occurs, in unlocked and in locked memory.
func memXScan(t *testing.T, pid int, needles []memXNeedle) (unlocked, locked []memXHit, scanned int64) {
	t.Helper()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	const chunk = 1 << 20
	buf := make([]byte, chunk+16)
	for _, r := range memXRegions(t, pid) {
		for off := r.start; off < r.end; off += chunk {
			n := int(min(uint64(len(buf)), r.end-off))
			m, err := mem.ReadAt(buf[:n], int64(off))
			if err != nil && m == 0 {
				break // unreadable (a guard page, a mapping gone since)
			}
			scanned += int64(m)
			for _, nd := range needles {
				b := buf[:m]
				for base := 0; ; {
					i := bytes.Index(b[base:], nd.b)
					if i < 0 {
						break
					}
					h := memXHit{nd.what, off + uint64(base+i), r}
					if r.locked {
						locked = append(locked, h)
					} else {
						unlocked = append(unlocked, h)
					}
					base += i + 1
				}
			}
		}
	}
	return unlocked, locked, scanned
}

// memXFileKeys returns the needles of the keys of a backing file: its
// data key, content key and header MAC key.
func memXFileKeys(t *testing.T, v *volume, name string, master []byte) []memXNeedle {
	t.Helper()
	b, err := os.ReadFile(v.backing(name))
	if err != nil {
		t.Fatal(err)
	}
	fileID, _ := secretsXSlots(t, b)
	dk, ck := secretsXFileKeys(t, v.backing(name), v.keyURI, master)
	mk, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 header mac", 32)
	if err != nil {
		t.Fatal(err)
	}
	var ns []memXNeedle
	ns = append(ns, memXNeedles(name+": data key", dk)...)
	ns = append(ns, memXNeedles(name+": content key", ck)...)
	ns = append(ns, memXNeedles(name+": MAC key", mk)...)
	return ns
}

func TestKeysInMemory(t *testing.T) {
	v := newVolume(t, withPlainBinary())
	if len(v.daemons) != 1 {
		t.Fatalf("daemonsOf(%s) = %v, want one daemon", v.mnt, v.daemons)
	}
	pid := v.daemons[0]
	if r := v.kmsfs("version"); r.code == 0 {
		t.Logf("daemon: %s", strings.TrimSpace(r.stdout))
	}
	// Asynchronous preemption would save a goroutine's registers (key
	// material included) in signal frames no one erases: the daemon runs
	// without it, whatever its environment said.
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil || !bytes.Contains(env, []byte("asyncpreemptoff=1")) {
		t.Errorf("the daemon's environment (%v) lacks GODEBUG=asyncpreemptoff=1", err)
	}

	// closed.txt is written, closed, opened again, read and closed: its
	// keys must be gone. open.txt stays open during the scan: its content
	// key must be found (in the AES state that encrypts it), which shows
	// the scan can see what it looks for.
	data := pattern("memory", 1<<20)
	writeFile(t, v.path("closed.txt"), data)
	checkContent(t, v.path("closed.txt"), data, v.blockSize)
	if err := os.Truncate(v.path("closed.txt"), int64(len(data)-100)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, v.path("open.txt"), data)
	f, err := os.OpenFile(v.path("open.txt"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("still open"), 5000); err != nil {
		t.Fatal(err)
	}

	master := secretsXMasterKey(t, v.keyPath, "")
	kek, err := hkdf.Key(sha256.New, master, nil, "kmsfs local wrap v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	closed := memXFileKeys(t, v, "closed.txt", master)
	var gone []memXNeedle
	gone = append(gone, memXNeedles("local master key", master)...)
	gone = append(gone, memXNeedles("local key-wrapping key", kek)...)
	gone = append(gone, closed...)
	_, ckOpen := secretsXFileKeys(t, v.backing("open.txt"), v.keyURI, master)
	control := memXNeedles("open.txt: content key", ckOpen)[:1] // raw, first half

	// The kernel sends RELEASE after close returns: give the daemon a
	// moment to close the file, then scan until it is clean.
	var unlocked, locked []memXHit
	var scanned int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		unlocked, locked, scanned = memXScan(t, pid, append(append([]memXNeedle{}, gone...), control...))
		if !memXHas(unlocked, gone) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("scanned %d MiB of the daemon's memory: %d hits in ordinary memory, %d in locked memory", scanned>>20, len(unlocked), len(locked))
	if !memXHas(unlocked, control) {
		t.Errorf("the content key of open.txt, open during the scan, was not found in the daemon's memory: the scan does not see the heap")
	}
	if !memXHas(locked, memXNeedles("local master key", master)[:1]) {
		t.Errorf("the local master key was not found in locked memory: the scan does not see memguard's pages")
	}
	for _, h := range unlocked {
		if memXHas([]memXHit{h}, gone) {
			t.Errorf("%s at %#x in ordinary memory (mapping %#x-%#x %s)", h.what, h.addr, h.region.start, h.region.end, h.region.name)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", v.log())
	}
}

// memXHas reports whether any hit is of one of the needles.
func memXHas(hits []memXHit, needles []memXNeedle) bool {
	for _, h := range hits {
		for _, n := range needles {
			if h.what == n.what {
				return true
			}
		}
	}
	return false
}
