package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// dropCaches empties the page cache (and records that it did).
func (r *runner) dropCaches() error {
	r.recordRaw("sync; echo 3 > /proc/sys/vm/drop_caches")
	return dropCaches()
}

// mountC mounts c (a fresh daemon: cold FUSE caches, a new peak RSS).
func (r *runner) mountC(c *fsConfig) error {
	if !c.isFUSE() {
		return nil
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	r.record(c, c.server())
	if err := c.mount(r.o.readaheadKB); err != nil {
		return err
	}
	if _, ok := r.mountOpts[c.name]; !ok {
		if m, ok := mountAt(c.mnt); ok {
			r.mountOpts[c.name] = m.opts + " " + m.superOpts
			r.info.readahead[c.name] = readahead(c.mnt)
		}
	}
	return nil
}

// unmountC unmounts c and folds the daemon's peaks into repetition rep.
func (r *runner) unmountC(c *fsConfig, rep int) (hwmKiB, lockedKiB int64, err error) {
	if !c.isFUSE() {
		return 0, 0, nil
	}
	hwmKiB, lockedKiB, err = c.unmount()
	var be *busyError
	if errors.As(err, &be) {
		// A mount that stayed busy is a finding, not a reason to throw
		// the run away: note it and go on.
		r.logf("warning: %v", err)
		r.notes = append(r.notes, err.Error())
		err = nil
	}
	if hwmKiB > 0 {
		r.res.setMax(c.name, "peak_rss", rep, float64(hwmKiB)/1024)
		r.res.setMax(c.name, "peak_locked", rep, float64(lockedKiB))
	}
	return hwmKiB, lockedKiB, err
}

// seqResult is one timed sequential pass.
type seqResult struct {
	secs, cpu float64
	hwm       int64 // KiB
}

// seq measures sequential write (with fsync) and cold sequential read of
// one big file.
func (r *runner) seq(c *fsConfig, rep int) error {
	size := int64(r.o.seqMiB) * mib
	w, rd, err := r.seqPass(c, rep, size, "seq")
	if err != nil {
		return err
	}
	r.res.set(c.name, "seq_write", rep, float64(size)/w.secs/1e6)
	r.res.set(c.name, "seq_read", rep, float64(size)/rd.secs/1e6)
	if c.isFUSE() {
		r.res.set(c.name, "cpu_seq_write", rep, w.cpu/(float64(size)/gib))
		r.res.set(c.name, "cpu_seq_read", rep, rd.cpu/(float64(size)/gib))
		r.res.set(c.name, "hwm_big", rep, float64(max(w.hwm, rd.hwm))/1024)
	}
	r.logf("%-11s seq: write %7.1f MB/s  read %7.1f MB/s", c.name, float64(size)/w.secs/1e6, float64(size)/rd.secs/1e6)
	return nil
}

// seqPass writes a file of size bytes with dd (fsync included) on a fresh
// mount, then reads it back cold (page cache dropped, fresh mount) and
// deletes it.
func (r *runner) seqPass(c *fsConfig, rep int, size int64, name string) (w, rd seqResult, err error) {
	file := filepath.Join(c.mnt, name+".dat")
	if err := r.mountC(c); err != nil {
		return w, rd, err
	}
	os.Remove(file)
	unix.Sync()
	settle()
	err = r.profiled(c, name+"-write", func() error {
		cpu0 := c.cpu()
		d, err := r.command(c, nil, "dd", "if=/dev/zero", "of="+file, "bs=1M",
			"count="+strconv.FormatInt(size/mib, 10), "conv=fsync", "status=none")
		w.secs, w.cpu = d.Seconds(), c.cpu()-cpu0
		return err
	})
	if err != nil {
		return w, rd, err
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() != size {
		return w, rd, fmt.Errorf("%s: %s after writing %d bytes: %v %v", c.name, file, size, fi, err)
	}
	if w.hwm, _, err = r.unmountC(c, rep); err != nil {
		return w, rd, err
	}
	if err := r.dropCaches(); err != nil {
		return w, rd, err
	}
	if err := r.mountC(c); err != nil {
		return w, rd, err
	}
	err = r.profiled(c, name+"-read", func() error {
		cpu0 := c.cpu()
		d, err := r.command(c, nil, "dd", "if="+file, "of=/dev/null", "bs=1M", "status=none")
		rd.secs, rd.cpu = d.Seconds(), c.cpu()-cpu0
		return err
	})
	if err != nil {
		return w, rd, err
	}
	if err := os.Remove(file); err != nil {
		return w, rd, err
	}
	rd.hwm, _, err = r.unmountC(c, rep)
	return w, rd, err
}

// fioVariant is one random-I/O run.
type fioVariant struct {
	key  string
	rw   string
	jobs int
	// cold runs start with nothing of the files in any cache (as on a
	// volume larger than memory); warm ones with the backing files read
	// into the page cache first.
	cold bool
}

var fioVariants = []fioVariant{
	{"randread_1_cold", "randread", 1, true},
	{"randread_4_cold", "randread", 4, true},
	{"randwrite_1_cold", "randwrite", 1, true},
	{"randwrite_4_cold", "randwrite", 4, true},
	{"randread_1", "randread", 1, false},
	{"randread_4", "randread", 4, false},
	{"randwrite_1", "randwrite", 1, false},
	{"randwrite_4", "randwrite", 4, false},
}

// fioJobs is how many job files are laid out (the largest numjobs).
const fioJobs = 4

// fio runs one 4 KiB random-I/O variant, time based, on a fresh mount:
// cold (page cache dropped) or warm (backing files read first).
func (r *runner) fio(c *fsConfig, rep int, v fioVariant) error {
	dir := filepath.Join(c.mnt, "fio")
	if err := r.mountC(c); err != nil {
		return err
	}
	// fio would lay its files out with 4 KiB writes, one FUSE round trip
	// each; write them here in 1 MiB writes instead (fio uses existing
	// files of the right size as they are).
	if err := layoutFioFiles(dir, int64(r.o.fioMiB)*mib); err != nil {
		return fmt.Errorf("%s: laying out fio files: %w", c.name, err)
	}
	// The fio directory's inode, to find its backing directory: with
	// encrypted names it is not called "fio" there.
	var fst unix.Stat_t
	if err := unix.Stat(dir, &fst); err != nil {
		return err
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	if v.cold {
		// Nothing in any cache: every read goes to the disk, and every
		// write of part of a page reads the page first.
		if err := r.dropCaches(); err != nil {
			return err
		}
	} else {
		// The backing files are read into the page cache (the FUSE
		// mounts' daemons then read them from memory), and a fresh mount
		// starts with an empty FUSE cache.
		r.recordRaw("cat $BACKING/fio/rand.* > /dev/null")
		bdir, err := findDirByInode(c.backing, fst.Ino)
		if err != nil {
			return err
		}
		if err := warmFiles(bdir); err != nil {
			return err
		}
	}
	if err := r.mountC(c); err != nil {
		return err
	}
	// Another configuration's random writes may still be on their way
	// to the disk.
	unix.Sync()
	settle()
	out := filepath.Join(r.work, "fio-"+v.key+".json")
	argv := []string{"fio", "--name=rand", "--directory=" + dir, "--rw=" + v.rw, "--bs=4k",
		fmt.Sprintf("--size=%dm", r.o.fioMiB), fmt.Sprintf("--numjobs=%d", v.jobs),
		"--time_based", fmt.Sprintf("--runtime=%d", r.o.fioRuntime), "--ioengine=psync",
		"--direct=0", "--group_reporting", "--output-format=json", "--output=" + out}
	var cpu float64
	err := r.profiled(c, v.key, func() error {
		cpu0 := c.cpu()
		_, err := r.command(c, nil, argv...)
		cpu = c.cpu() - cpu0
		return err
	})
	if err != nil {
		return err
	}
	iops, ioBytes, err := parseFio(out, v.rw)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	r.res.set(c.name, v.key, rep, iops)
	if c.isFUSE() && v.jobs == 4 && ioBytes > 0 {
		r.res.set(c.name, "cpu_"+v.key, rep, cpu/(float64(ioBytes)/gib))
	}
	r.logf("%-11s %-11s %9.0f IOPS (%.1f MB/s)", c.name, v.key, iops, iops*4096/1e6)
	return nil
}

// layoutFioFiles makes sure dir holds fio's files rand.J.0 of size bytes.
func layoutFioFiles(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	buf := make([]byte, mib)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	for j := 0; j < fioJobs; j++ {
		p := filepath.Join(dir, fmt.Sprintf("rand.%d.0", j))
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			continue
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		for off := int64(0); off < size; off += mib {
			n := min(int64(mib), size-off)
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// findDirByInode returns root, or the directory in it, whose inode is
// ino.
func findDirByInode(root string, ino uint64) (string, error) {
	var st unix.Stat_t
	if unix.Stat(root, &st) == nil && st.Ino == ino {
		return root, nil
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		p := filepath.Join(root, e.Name())
		if e.IsDir() && unix.Lstat(p, &st) == nil && st.Ino == ino {
			return p, nil
		}
	}
	return "", fmt.Errorf("no directory with inode %d in %s", ino, root)
}

// warmFiles reads every file of dir, bringing it into the page cache.
func warmFiles(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// parseFio returns the IOPS and bytes moved of a fio JSON report.
func parseFio(path, rw string) (iops float64, ioBytes int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	// fio may print notes before the JSON document.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	type side struct {
		IOBytes int64   `json:"io_bytes"`
		IOPS    float64 `json:"iops"`
	}
	var rep struct {
		Jobs []struct {
			Read  side `json:"read"`
			Write side `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, 0, fmt.Errorf("fio report %s: %w", path, err)
	}
	if len(rep.Jobs) == 0 {
		return 0, 0, fmt.Errorf("fio report %s: no jobs", path)
	}
	s := rep.Jobs[0].Read
	if rw == "randwrite" {
		s = rep.Jobs[0].Write
	}
	if s.IOBytes == 0 {
		return 0, 0, fmt.Errorf("fio report %s: no I/O done", path)
	}
	return s.IOPS, s.IOBytes, nil
}

// The small-file tree runs in three phases, each over every
// configuration in turn: copy in, list and read (cold), delete. Deleting
// one configuration's tree right before copying another's would slow the
// second one down: ext4 without a journal (as on the benchmark machine)
// avoids reusing inodes deleted in the last minutes, and its allocator
// then scans past them.

// treeCopy copies the source tree in with cp -a.
func (r *runner) treeCopy(c *fsConfig, rep int) error {
	dst := filepath.Join(c.mnt, "tree")
	if err := r.mountC(c); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		if _, err := r.command(c, nil, "rm", "-rf", dst); err != nil {
			return err
		}
	}
	unix.Sync()
	settle()
	var tcp time.Duration
	err := r.profiled(c, "tree-cp", func() error {
		var err error
		tcp, err = r.command(c, nil, "cp", "-a", r.o.treeSrc, dst)
		return err
	})
	if err != nil {
		return err
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	r.res.set(c.name, "tree_cp", rep, tcp.Seconds())
	r.logf("%-11s tree: cp -a %.2fs", c.name, tcp.Seconds())
	return nil
}

// treeRead lists the tree (a stat of every entry) and reads every file,
// starting cold.
func (r *runner) treeRead(c *fsConfig, rep int) error {
	dst := filepath.Join(c.mnt, "tree")
	if err := r.dropCaches(); err != nil {
		return err
	}
	if err := r.mountC(c); err != nil {
		return err
	}
	var lines lineCounter
	tfind, err := r.command(c, &lines, "find", dst, "-ls")
	if err != nil {
		return err
	}
	if int(lines) != r.treeEntries {
		return fmt.Errorf("%s: find listed %d entries, the source has %d", c.name, lines, r.treeEntries)
	}
	var n byteCounter
	var tread time.Duration
	err = r.profiled(c, "tree-read", func() error {
		var err error
		tread, err = r.command(c, &n, "tar", "-C", dst, "-cf", "-", ".")
		return err
	})
	if err != nil {
		return err
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	r.res.set(c.name, "tree_find", rep, tfind.Seconds())
	r.res.set(c.name, "tree_read", rep, tread.Seconds())
	r.logf("%-11s tree: find %.2fs  read %.2fs (%d MB)", c.name, tfind.Seconds(), tread.Seconds(), int64(n)/1e6)
	return nil
}

// treeRemove deletes the tree and totals the four steps.
func (r *runner) treeRemove(c *fsConfig, rep int) error {
	dst := filepath.Join(c.mnt, "tree")
	if err := r.mountC(c); err != nil {
		return err
	}
	unix.Sync()
	settle()
	trm, err := r.command(c, nil, "rm", "-rf", dst)
	if err != nil {
		return err
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	r.res.set(c.name, "tree_rm", rep, trm.Seconds())
	total := 0.0
	for _, k := range []string{"tree_cp", "tree_find", "tree_read", "tree_rm"} {
		total += r.res.get(c.name, k, rep) // NaN if a step failed
	}
	if !nan(total) {
		r.res.set(c.name, "tree_total", rep, total)
	}
	r.logf("%-11s tree: rm -rf %.2fs", c.name, trm.Seconds())
	return nil
}

type lineCounter int

func (l *lineCounter) Write(p []byte) (int, error) {
	*l += lineCounter(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

type byteCounter int64

func (b *byteCounter) Write(p []byte) (int, error) {
	*b += byteCounter(len(p))
	return len(p), nil
}

// countEntries counts what "find dir" lists: dir and everything below.
func countEntries(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(string, fs.DirEntry, error) error {
		n++
		return nil
	})
	return n, err
}

// memory measures the daemon's memory: its peak after a 1 MiB file (to
// compare with the big file of seq) and its cost per open file.
func (r *runner) memory(c *fsConfig, rep int) error {
	if !c.isFUSE() {
		return nil
	}
	w, rd, err := r.seqPass(c, rep, mib, "small")
	if err != nil {
		return err
	}
	r.res.set(c.name, "hwm_small", rep, float64(max(w.hwm, rd.hwm))/1024)

	n := r.o.openFiles
	dir := filepath.Join(c.mnt, "open")
	if err := r.mountC(c); err != nil {
		return err
	}
	names, err := layoutSmallFiles(dir, n)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	if err := r.mountC(c); err != nil {
		return err
	}
	// Look every file up first: the inodes exist before and after, so
	// the difference is the cost of the open files alone.
	for _, p := range names {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	before, err := settledStatus(c.pid())
	if err != nil {
		return err
	}
	files := make([]*os.File, 0, n)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	buf := make([]byte, 4096)
	for _, p := range names {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("%s: opening file %d of %d: %w", c.name, len(files)+1, n, err)
		}
		files = append(files, f)
		if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	after, err := settledStatus(c.pid())
	if err != nil {
		return err
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	if _, _, err := r.unmountC(c, rep); err != nil {
		return err
	}
	r.res.set(c.name, "open_rss", rep, float64(after.RSS)/1024)
	r.res.set(c.name, "open_rss_per_file", rep, float64(after.RSS-before.RSS)/float64(n))
	r.res.set(c.name, "open_locked", rep, float64(after.Locked))
	r.res.set(c.name, "open_locked_per_file", rep, float64(after.Locked-before.Locked)*1024/float64(n))
	r.logf("%-11s memory: 1 MiB file peak %.1f MiB; %d files open: RSS %.1f MiB (+%.1f KiB/file), locked %d KiB (+%.0f B/file)",
		c.name, float64(max(w.hwm, rd.hwm))/1024, n, float64(after.RSS)/1024,
		float64(after.RSS-before.RSS)/float64(n), after.Locked, float64(after.Locked-before.Locked)*1024/float64(n))
	return nil
}

// settledStatus reads a daemon's memory once it has had a moment to
// finish what it was doing.
func settledStatus(pid int) (procStatus, error) {
	time.Sleep(300 * time.Millisecond)
	return readStatus(pid)
}

// layoutSmallFiles makes sure dir holds n files of 4 KiB and returns
// their paths.
func layoutSmallFiles(dir string, n int) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := bytes.Repeat([]byte("kmsfs open-file test\n"), 4096/21+1)[:4096]
	names := make([]string, n)
	for i := range names {
		p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
		names[i] = p
		if fi, err := os.Stat(p); err == nil && fi.Size() == int64(len(data)) {
			continue
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// profiled runs fn; with --profile, and for the kmsfs and baseline
// daemons, it records a perf profile of the daemon meanwhile and writes a
// text summary next to it.
func (r *runner) profiled(c *fsConfig, name string, fn func() error) error {
	if r.o.profileDir == "" || c.pid() == 0 || (c.name != cfgKmsfs && c.name != cfgBaseline) {
		return fn()
	}
	data := filepath.Join(r.o.profileDir, c.name+"-"+name+".data")
	logf, err := os.Create(filepath.Join(r.o.profileDir, c.name+"-"+name+".perf.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	perf := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(c.pid()), "-o", data)
	perf.Stdout, perf.Stderr = logf, logf
	if err := perf.Start(); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // let perf attach
	ferr := fn()
	perf.Process.Signal(syscall.SIGINT)
	perf.Wait()
	var txt bytes.Buffer
	fmt.Fprintf(&txt, "# %s daemon during %s\n\n## self time (flat)\n", c.name, name)
	for _, args := range [][]string{
		{"report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "-g", "none", "--percent-limit", "0.8"},
		{"report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "4"},
	} {
		out, _ := exec.Command("perf", args...).Output()
		txt.Write(out)
		txt.WriteString("\n## with children (cumulative)\n")
	}
	txt.Truncate(txt.Len() - len("\n## with children (cumulative)\n"))
	os.WriteFile(filepath.Join(r.o.profileDir, c.name+"-"+name+".txt"), txt.Bytes(), 0o644)
	return ferr
}

// nan reports whether v is not a number (not measured).
func nan(v float64) bool { return math.IsNaN(v) }
