package tests

// Crash safety: the daemon is killed with SIGKILL while a writer process
// writes through the mount, many times, at random moments. After every
// crash the volume is remounted and every file the writer touched must
// read without error, hold everything the writer had fsync'd, and hold
// nothing but bytes the writer wrote.
//
// The writer is this test binary re-executed (see init below). It writes
// files with deterministic contents: generation g of file f is a pseudo
// random byte stream keyed by (f, g). Generation 0 creates the file by
// sequential writes of random sizes (so blocks are appended and partially
// rewritten); each later generation rewrites the whole file the same
// way. The writer fsyncs at random points and records in a log outside
// the mount, synced, "begin NAME SIZE" before creating a file and
// "sync NAME GEN OFF" after each fsync: bytes [0, OFF) of generation GEN
// and bytes [OFF, SIZE) of generation GEN-1 are then durable.
//
// The kill comes at random moments: while the first files are created,
// some time after the first fsync, or (most often) a few milliseconds
// after the writer announced a large write on a pipe, when the daemon is
// likely to be writing blocks.
//
// After a crash, a byte at offset o of a file may hold generation d (the
// durable one at o) or any later generation up to GEN+1 (written but not
// yet fsync'd); the file size is at least what was fsync'd; a file whose
// creation was never fsync'd may be absent, or present with a prefix of
// generation 0. Reading must never fail: a torn block (half old, half new
// ciphertext) would fail authentication and read as EIO.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/names"
)

// Environment of the re-executed writer process.
const (
	crashXWriterEnv = "KMSFS_CRASHX_WRITER" // the directory to write in (inside the mount)
	crashXLogEnv    = "KMSFS_CRASHX_LOG"    // the writer's log (outside the mount)
	crashXSeedEnv   = "KMSFS_CRASHX_SEED"   // seed of the writer's choices
	crashXRoundEnv  = "KMSFS_CRASHX_ROUND"  // round number (part of the file names)

	// crashSeedEnv, set by a person, repeats a run's random choices.
	crashSeedEnv = "KMSFS_CRASH_SEED"
)

const (
	// crashXWriters is the number of goroutines of the writer process,
	// each writing its own files.
	crashXWriters = 4
	// crashXWriterLimit ends a writer that was never interrupted.
	crashXWriterLimit = 30 * time.Second
)

func init() {
	// The writer runs before TestMain: it is not a test run.
	if dir := os.Getenv(crashXWriterEnv); dir != "" {
		os.Exit(crashXWriterMain(dir))
	}
}

// crashXLargeWrite is the size from which the writer announces a write
// on crashXNotes.
const crashXLargeWrite = 256 << 10

// crashXNotes is the writer's announcement pipe (nil if none).
var crashXNotes *os.File

// crashXLog is the writer's record of what it has made durable.
type crashXLog struct {
	mu sync.Mutex
	f  *os.File
}

// record appends one line to the log and syncs it.
func (l *crashXLog) record(format string, a ...any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := fmt.Fprintf(l.f, format+"\n", a...); err != nil {
		return err
	}
	return unix.Fdatasync(int(l.f.Fd()))
}

// crashXLogError marks a failure to write the log, which is outside the
// mount and must not fail.
type crashXLogError struct{ err error }

func (e crashXLogError) Error() string { return "writing the log: " + e.err.Error() }

// crashXWriterMain is the writer process. It prints one line per
// goroutine saying how it ended and exits 0 if every goroutine ended
// because the file system went away (ENOTCONN, ECONNABORTED, or EIO from
// the kernel) or ran out of time, 1 otherwise.
func crashXWriterMain(dir string) int {
	seed, err1 := strconv.ParseUint(os.Getenv(crashXSeedEnv), 10, 64)
	round, err2 := strconv.Atoi(os.Getenv(crashXRoundEnv))
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "crash writer: bad %s or %s\n", crashXSeedEnv, crashXRoundEnv)
		return 2
	}
	lf, err := os.OpenFile(os.Getenv(crashXLogEnv), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash writer: %v\n", err)
		return 2
	}
	defer lf.Close()
	lg := &crashXLog{f: lf}
	// Descriptor 3, when the test passes it, is a pipe on which the
	// writer announces each large write just before making it.
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err == nil {
		crashXNotes = os.NewFile(3, "notes")
	}
	deadline := time.Now().Add(crashXWriterLimit)
	errs := make([]error, crashXWriters)
	var wg sync.WaitGroup
	for w := range crashXWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = crashXWriteFiles(dir, round, w, seed, lg, deadline)
		}()
	}
	wg.Wait()
	code := 0
	for w, err := range errs {
		switch e := errnoOf(err); {
		case err == nil:
			fmt.Printf("writer %d: time limit\n", w)
		case e == syscall.ENOTCONN || e == syscall.ECONNABORTED:
			fmt.Printf("writer %d: disconnected: %v\n", w, err)
		case e == syscall.EIO:
			// The kernel reports EIO, not ECONNABORTED, when a partial
			// page write needed a read that the dead connection failed.
			// The test checks that the daemon itself reported no error.
			fmt.Printf("writer %d: EIO: %v\n", w, err)
		default:
			fmt.Printf("writer %d: FAILED: %v\n", w, err)
			code = 1
		}
	}
	return code
}

// crashXWriteFiles creates and rewrites files until an error or the
// deadline.
func crashXWriteFiles(dir string, round, w int, seed uint64, lg *crashXLog, deadline time.Time) error {
	rng := rand.New(rand.NewPCG(seed, uint64(round)<<8|uint64(w)))
	for k := 0; time.Now().Before(deadline); k++ {
		name := fmt.Sprintf("r%02d-w%d-f%03d", round, w, k)
		size := crashXFileSize(rng)
		gens := 1 + rng.IntN(3)
		if err := lg.record("begin %s %d", name, size); err != nil {
			return crashXLogError{err}
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		err = crashXWriteFile(f, name, size, gens, rng, lg)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// crashXWriteFile writes generations 0..gens-1 of one file.
func crashXWriteFile(f *os.File, name string, size, gens int, rng *rand.Rand, lg *crashXLog) error {
	if size == 0 {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := lg.record("sync %s 0 0", name); err != nil {
			return crashXLogError{err}
		}
		return nil
	}
	for g := range gens {
		data := crashXPattern(name, g, size)
		for off := 0; off < size; {
			n := min(crashXChunk(rng), size-off)
			if n >= crashXLargeWrite && crashXNotes != nil {
				crashXNotes.Write([]byte{'w'}) // errors do not matter
			}
			if _, err := f.WriteAt(data[off:off+n], int64(off)); err != nil {
				return err
			}
			off += n
			if off == size || rng.IntN(5) == 0 {
				if err := f.Sync(); err != nil {
					return err
				}
				if err := lg.record("sync %s %d %d", name, g, off); err != nil {
					return crashXLogError{err}
				}
			}
		}
	}
	return nil
}

// crashXFileSize picks a file size: some empty or tiny, some within a few
// blocks, most up to 1.5 MiB.
func crashXFileSize(rng *rand.Rand) int {
	switch rng.IntN(8) {
	case 0:
		return rng.IntN(100)
	case 1, 2:
		return rng.IntN(20000)
	}
	return rng.IntN(3 << 19)
}

// crashXChunk picks the size of one write: small ones rewrite parts of
// blocks, large ones span many blocks in one FUSE request (up to the
// 1 MiB limit) and keep the daemon in long pwrites, where a kill is most
// likely to land.
func crashXChunk(rng *rand.Rand) int {
	switch rng.IntN(4) {
	case 0:
		return 1 + rng.IntN(5000)
	case 1:
		return 1 + rng.IntN(64<<10)
	}
	return 256<<10 + rng.IntN(768<<10)
}

// crashXPattern is generation gen of file name: size pseudo-random bytes
// that differ between files and generations (a ChaCha8 stream keyed by
// both).
func crashXPattern(name string, gen, size int) []byte {
	seed := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", name, gen)))
	b := make([]byte, size)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// crashXFile is what the writer's log says about one file.
type crashXFile struct {
	name string
	size int // the size every generation has
	gen  int // the last generation fsync'd (partly), -1 if none
	off  int // bytes [0, off) of generation gen are durable
}

// crashXReadLog parses the writer's log.
func crashXReadLog(t *testing.T, path string) []*crashXFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("os.ReadFile(%s) = %v, want the writer's log", path, err)
	}
	byName := map[string]*crashXFile{}
	var files []*crashXFile
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "begin":
			size, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("writer log %s: bad line %q", path, sc.Text())
			}
			cf := &crashXFile{name: f[1], size: size, gen: -1}
			byName[cf.name] = cf
			files = append(files, cf)
		case len(f) == 4 && f[0] == "sync":
			cf := byName[f[1]]
			g, err1 := strconv.Atoi(f[2])
			off, err2 := strconv.Atoi(f[3])
			if cf == nil || err1 != nil || err2 != nil {
				t.Fatalf("writer log %s: bad line %q", path, sc.Text())
			}
			cf.gen, cf.off = g, off
		default:
			t.Fatalf("writer log %s: bad line %q", path, sc.Text())
		}
	}
	return files
}

// crashXCheckFile checks one file after a crash against the writer's log
// and returns its content, or nil if it is (legitimately) absent.
func crashXCheckFile(t *testing.T, dir string, cf *crashXFile) []byte {
	t.Helper()
	p := filepath.Join(dir, cf.name)
	got, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if cf.gen >= 0 {
			t.Errorf("os.ReadFile(%s) = %v, want the file: generation %d was fsync'd up to byte %d", p, err, cf.gen, cf.off)
		}
		return nil
	}
	if err != nil {
		t.Errorf("os.ReadFile(%s) after the crash = %v, want nil (fsync'd: generation %d up to byte %d of %d); %s",
			p, err, cf.gen, cf.off, cf.size, crashXBadBlocks(p, cf))
		return nil
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(got)) {
		t.Errorf("os.Stat(%s) = %v, %v, want size %d (the bytes read)", p, fi, err, len(got))
	}
	minSize := 0
	switch {
	case cf.gen > 0, cf.gen == 0 && cf.off == cf.size:
		minSize = cf.size
	case cf.gen == 0:
		minSize = cf.off
	}
	if len(got) < minSize || len(got) > cf.size {
		t.Errorf("os.ReadFile(%s) = %d bytes, want %d to %d (fsync'd: generation %d up to byte %d)", p, len(got), minSize, cf.size, cf.gen, cf.off)
		return got
	}
	// Generations that may be found: from the durable one (gen below
	// off, gen-1 above it) to gen+1.
	pats := make([][]byte, cf.gen+3) // index g+1, for g = -1 .. gen+1
	pat := func(g int) []byte {
		if pats[g+1] == nil {
			pats[g+1] = crashXPattern(cf.name, max(g, 0), cf.size)
		}
		return pats[g+1]
	}
	allowed := func(o int) (lo, hi int) {
		durable := cf.gen
		if o >= cf.off {
			durable--
		}
		return max(durable, 0), cf.gen + 1
	}
	// Whole chunks are compared first (fast); a chunk that no single
	// generation matches is checked byte by byte.
	const chunk = 512
	for start := 0; start < len(got); start += chunk {
		end := min(start+chunk, len(got))
		lo, hi := allowed(start)
		if lo2, hi2 := allowed(end - 1); lo2 == lo && hi2 == hi {
			whole := false
			for g := lo; g <= hi && !whole; g++ {
				whole = bytes.Equal(got[start:end], pat(g)[start:end])
			}
			if whole {
				continue
			}
		}
		for o := start; o < end; o++ {
			lo, hi := allowed(o)
			ok := false
			for g := lo; g <= hi && !ok; g++ {
				ok = got[o] == pat(g)[o]
			}
			if !ok {
				e := min(o+16, len(got))
				t.Errorf("%s: byte %d (block %d) = %x..., want generation %d..%d of the writer (%x...); fsync'd: generation %d up to byte %d",
					p, o, o/defaultBlockSize, got[o:e], lo, hi, pat(lo)[o:e], cf.gen, cf.off)
				return got
			}
		}
	}
	return got
}

// crashXBadBlocks describes which blocks of the file at p fail to read,
// and whether they held fsync'd bytes.
func crashXBadBlocks(p string, cf *crashXFile) string {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Sprintf("os.Open = %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("Stat = %v", err)
	}
	var bad []string
	buf := make([]byte, defaultBlockSize)
	for off := int64(0); off < fi.Size(); off += defaultBlockSize {
		if _, err := preadFull(f, buf[:min(defaultBlockSize, fi.Size()-off)], off); err != nil {
			what := "no fsync'd bytes"
			if cf.gen > 0 || cf.gen == 0 && off < int64(cf.off) {
				what = "fsync'd bytes lost"
			}
			bad = append(bad, fmt.Sprintf("block %d (%v, %s)", off/defaultBlockSize, errnoOf(err), what))
		}
	}
	return fmt.Sprintf("size %d, unreadable: %s", fi.Size(), strings.Join(bad, ", "))
}

// crashXLogProblems returns the daemon log lines that report a problem
// (anything but the lines of a normal mount and unmount).
func crashXLogProblems(v *volume) []string {
	b, _ := os.ReadFile(v.logFile)
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// Replaying the write journal after a kill is what should happen.
		if line != "" && !strings.Contains(line, "kmsfs: serving ") && !strings.HasSuffix(line, " unmounted") &&
			!strings.Contains(line, "kmsfs: completed an interrupted write to ") {
			bad = append(bad, line)
		}
	}
	return bad
}

// crashXCheckBacking checks the size of every backing file in dir, a
// backing directory of v, against docs/FORMAT.md: a size some file has
// (v.plainSizeOf), never a torn header or a torn tail. In version 2 that
// is empty, or a whole header followed by blocks of at least one plaintext
// byte; in version 3 empty, a whole header alone, an inline file with at
// least one plaintext byte, or a paged file ending in a block with at
// least one byte (not at exactly one page, not in a metadata page).
func crashXCheckBacking(t *testing.T, v *volume, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("os.ReadDir(%s) = %v", dir, err)
	}
	hl := int64(v.headerLen())
	for _, e := range ents {
		if names.Internal(e.Name()) {
			continue // a directory ID or long-name file, not an encrypted file
		}
		fi, err := e.Info()
		if err != nil {
			t.Errorf("stat backing file %s: %v", e.Name(), err)
			continue
		}
		c := fi.Size()
		if _, err := v.plainSizeOf(t, c); err != nil {
			what := "a torn tail"
			if c < hl {
				what = "a torn header"
			}
			t.Errorf("backing file %s is %d bytes: %s (%v)", filepath.Join(dir, e.Name()), c, what, err)
		}
	}
}

// crashXKillDaemon kills the daemon serving v with SIGKILL.
func crashXKillDaemon(t *testing.T, v *volume) {
	t.Helper()
	pids := daemonsOf(v.mnt)
	if len(pids) == 0 {
		t.Fatalf("daemonsOf(%s) = none, want the daemon serving the mount", v.mnt)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d = %v", pid, err)
		}
	}
	if alive := waitExit(pids, daemonExitTimeout); len(alive) > 0 {
		t.Fatalf("daemon %v still runs %v after kill -9", alive, daemonExitTimeout)
	}
}

// crashXRemount detaches the dead mount and mounts the volume again.
func crashXRemount(t *testing.T, v *volume) {
	t.Helper()
	// (os.Stat could be answered from the kernel's attribute cache.)
	// ENOTCONN, or ECONNABORTED when a request was in flight as the
	// server died (the kernel aborted the connection).
	if _, err := os.ReadDir(v.mnt); errnoOf(err) != syscall.ENOTCONN && errnoOf(err) != syscall.ECONNABORTED {
		t.Errorf("os.ReadDir(%s) after kill -9 of the daemon = %v, want ENOTCONN or ECONNABORTED", v.mnt, err)
	}
	if r := runCommand(os.Environ(), "/", "umount", "-l", v.mnt); r.code != 0 || r.err != nil {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if isMounted(v.mnt) {
		t.Fatalf("%s is still mounted after umount -l", v.mnt)
	}
	v.mounted = false
	v.daemons = nil
	v.mount()
}

// crashXWaitLog waits until the writer's log holds a line starting with
// prefix, or the writer exits.
func crashXWaitLog(path, prefix string, exited <-chan struct{}, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if bytes.HasPrefix(b, []byte(prefix)) || bytes.Contains(b, []byte("\n"+prefix)) {
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
	return false
}

// crashXRecheck checks that the files still have the checksums they had
// right after their crash, and removes them if remove is set.
func crashXRecheck(t *testing.T, dir string, sums map[string][32]byte, remove bool) {
	t.Helper()
	names := make([]string, 0, len(sums))
	for name := range sums {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("os.ReadFile(%s) after later crashes = %v, want nil", p, err)
		} else if sha256.Sum256(got) != sums[name] {
			t.Errorf("%s changed after its crash check", p)
		}
		if remove {
			if err := os.Remove(p); err != nil {
				t.Errorf("os.Remove(%s) = %v", p, err)
			}
		}
	}
}

// crashXWaitNotes waits for n more announcements of large writes.
func crashXWaitNotes(notes *os.File, n int, timeout time.Duration) bool {
	notes.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1)
	for range n {
		if _, err := notes.Read(buf); err != nil {
			return false
		}
	}
	return true
}

// TestCrash kills the daemon with SIGKILL during heavy writing, up to 120
// times (at least 20, within about 80 seconds) at random moments, and
// checks the volume after each crash, again some crashes later, and once
// more at the end.
func TestCrash(t *testing.T) {
	const (
		rounds     = 120
		minRounds  = 20
		budget     = 80 * time.Second
		keepRounds = 8
	)
	v := newVolume(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", crashSeedEnv, s, err)
		}
	}
	t.Logf("seed %d (%s=%d repeats the writers' choices and kill delays)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := v.path("crash")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("os.Mkdir(%s) = %v", dir, err)
	}

	// sums[round][file] is the checksum of the file right after its
	// crash. Files are checked again, and removed, keepRounds rounds
	// later (after keepRounds more crashes), to bound the space and the
	// time the test needs; the last ones are checked at the end.
	sums := map[int]map[string][32]byte{}
	start := time.Now()
	done := 0
	for round := range rounds {
		if time.Since(start) > budget {
			t.Logf("stopping after %d rounds: the time budget of %v is spent", round, budget)
			break
		}
		t0 := time.Now()
		logPath := filepath.Join(v.dir, fmt.Sprintf("crash-writer-%02d.log", round))
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(),
			crashXWriterEnv+"="+dir,
			crashXLogEnv+"="+logPath,
			crashXSeedEnv+"="+strconv.FormatUint(seed, 10),
			crashXRoundEnv+"="+strconv.Itoa(round),
			// A race-enabled writer would sleep 1 s at exit.
			"GORACE=atexit_sleep_ms=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		notes, notesW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.ExtraFiles = []*os.File{notesW}
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting the writer: %v", err)
		}
		notesW.Close()
		exited := make(chan struct{})
		var werr error
		go func() { werr = cmd.Wait(); close(exited) }()

		// When to kill: an eighth of the crashes hit the first files'
		// creation; an eighth come up to 0.8 s after the first fsync; the
		// rest come up to 6 ms after the writer announced one of its large
		// writes, when the daemon is likely to be decrypting, encrypting
		// or writing blocks. (A kill lands inside the daemon's pwrite of
		// blocks in only a few percent of the rounds, hence the many
		// rounds.)
		var when string
		var delay time.Duration
		ok := false
		switch rng.IntN(8) {
		case 0:
			delay = time.Duration(rng.IntN(20_000)) * time.Microsecond
			when = fmt.Sprintf("%v after the first \"begin\"", delay)
			ok = crashXWaitLog(logPath, "begin ", exited, 20*time.Second)
		case 1:
			delay = time.Duration(rng.IntN(800)) * time.Millisecond
			when = fmt.Sprintf("%v after the first \"sync\"", delay)
			ok = crashXWaitLog(logPath, "sync ", exited, 20*time.Second)
		default:
			skip := 1 + rng.IntN(20)
			delay = time.Duration(rng.IntN(6000)) * time.Microsecond
			when = fmt.Sprintf("%v after large write %d", delay, skip)
			ok = crashXWaitLog(logPath, "sync ", exited, 20*time.Second) && crashXWaitNotes(notes, skip, 20*time.Second)
		}
		if !ok {
			cmd.Process.Kill()
			<-exited
			notes.Close()
			t.Fatalf("round %d: the writer made no progress (%v):\n%s", round, werr, out.String())
		}
		time.Sleep(delay)
		crashXKillDaemon(t, v)
		notes.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("round %d: the writer still ran 30s after the daemon was killed (a hang on the dead mount?)\n%s", round, out.String())
		}
		if werr != nil {
			t.Errorf("round %d: writer = %v, want every writer to end with ENOTCONN, ECONNABORTED or EIO:\n%s", round, werr, out.String())
		}
		t1 := time.Now()
		crashXRemount(t, v)
		t2 := time.Now()

		files := crashXReadLog(t, logPath)
		synced := 0
		for _, cf := range files {
			if cf.gen >= 0 {
				synced++
			}
			if got := crashXCheckFile(t, dir, cf); got != nil {
				if sums[round] == nil {
					sums[round] = map[string][32]byte{}
				}
				sums[round][cf.name] = sha256.Sum256(got)
			}
		}
		if old := round - keepRounds; old >= 0 {
			crashXRecheck(t, dir, sums[old], true)
			delete(sums, old)
		}
		crashXCheckBacking(t, v, v.backing("crash"))
		if bad := crashXLogProblems(v); len(bad) > 0 {
			t.Errorf("round %d: the daemon log reports problems, want none:\n%s", round, strings.Join(bad, "\n"))
		}
		t.Logf("round %d: killed %s; %d files (%d fsync'd) checked (write %v, remount %v, check %v)", round, when, len(files), synced,
			t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
		done++
		if t.Failed() {
			t.Fatalf("round %d failed; seed %d", round, seed)
		}
	}
	if done < minRounds {
		t.Errorf("only %d crash rounds ran within %v, want at least %d", done, budget, minRounds)
	}

	// A clean remount: every file keeps the content it had right after
	// its crash, and nothing else is there.
	v.remount()
	want := map[string][32]byte{}
	for _, m := range sums {
		for name, sum := range m {
			want[name] = sum
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("os.ReadDir(%s) = %v", dir, err)
	}
	for _, e := range ents {
		if _, ok := want[e.Name()]; !ok {
			t.Errorf("%s: a file no crash check saw, or one that was removed", e.Name())
		}
	}
	crashXRecheck(t, dir, want, false)
	t.Logf("%d crash rounds in %v; %d files checked at the end", done, time.Since(start).Round(time.Second), len(want))
}
