package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// procStatus holds the memory lines of /proc/PID/status, in KiB.
type procStatus struct {
	RSS, HWM, Locked int64
}

func readStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var s procStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n
		case "VmHWM":
			s.HWM = n
		case "VmLck":
			s.Locked = n
		}
	}
	return s, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// cpuSeconds returns the user + system CPU time of pid.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted
	// from the closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(u+s) / clockTicks, nil
}

// sampler polls a daemon's memory until stopped and keeps the peaks
// (VmHWM is the kernel's own peak; VmLck has none, so it is polled).
type sampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	peakLocked int64
	last       procStatus
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			s.poll()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) poll() {
	st, err := readStatus(s.pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = st
	s.peakLocked = max(s.peakLocked, st.Locked)
}

// finish takes a last sample and stops polling; it returns the peak RSS
// and the peak locked memory in KiB.
func (s *sampler) finish() (hwm, locked int64) {
	s.poll()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last.HWM, s.peakLocked
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dir, dev, fstype, source, opts, superOpts string
}

func mounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 3 {
			continue
		}
		out = append(out, mountEntry{
			dir: unescapeMount(a[4]), dev: a[2], opts: a[5],
			fstype: b[0], source: unescapeMount(b[1]), superOpts: b[2],
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes of mountinfo (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountAt returns the mount whose mount point is dir, if any.
func mountAt(dir string) (mountEntry, bool) {
	ms, _ := mounts()
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].dir == dir {
			return ms[i], true
		}
	}
	return mountEntry{}, false
}

// dropCaches writes back dirty data and empties the page, dentry and
// inode caches of the whole machine, then waits for the disk to settle.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return err
	}
	settle()
	return nil
}

// How long the disks must be idle before a timed step, and the longest
// settle waits for that.
const (
	quietFor  = 2 * time.Second
	settleMax = 30 * time.Second
)

// settle waits until no disk has read or written a sector for quietFor
// (at most settleMax). Writeback of the previous step, or the journal of
// a delete, would otherwise land in the next timed step, whichever
// configuration that is; the quiet time also lets a VM's host finish
// writing what the guest already flushed.
func settle() {
	deadline := time.Now().Add(settleMax)
	prev := diskSectors()
	for quiet := time.Duration(0); quiet < quietFor && time.Now().Before(deadline); {
		time.Sleep(quietFor / 8)
		cur := diskSectors()
		if cur == prev {
			quiet += quietFor / 8
		} else {
			quiet = 0
		}
		prev = cur
	}
}

// diskSectors returns the sectors read and written so far by every block
// device (/proc/diskstats), or 0 if it cannot tell.
func diskSectors() uint64 {
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		for _, i := range []int{5, 9} { // sectors read, sectors written
			n, _ := strconv.ParseUint(f[i], 10, 64)
			sum += n
		}
	}
	return sum
}
