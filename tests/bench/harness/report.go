package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// machineInfo describes where the numbers were taken.
type machineInfo struct {
	nproc              int
	cpu, kernel, mem   string
	disk               string
	goVersion, fio     string
	commit             string
	loadStart, loadEnd string
	readahead          map[string]string
}

func gatherMachineInfo(r *runner) *machineInfo {
	m := &machineInfo{nproc: runtime.NumCPU(), readahead: map[string]string{}, loadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	// The filesystem holding the scratch directory: the longest mount
	// point that is a prefix of it.
	if ms, err := mounts(); err == nil {
		best := mountEntry{}
		for _, e := range ms {
			if (e.dir == "/" || r.work == e.dir || strings.HasPrefix(r.work, e.dir+"/")) && len(e.dir) >= len(best.dir) {
				best = e
			}
		}
		m.disk = fmt.Sprintf("%s on %s (%s, %s)", best.fstype, best.source, best.dir, best.superOpts)
	}
	m.goVersion = strings.TrimSpace(outputOf(r.root, "go", "version"))
	m.fio = strings.TrimSpace(outputOf("", "fio", "--version"))
	m.commit = strings.TrimSpace(outputOf(r.root, "git", "-c", "safe.directory=*", "rev-parse", "--short", "HEAD"))
	if m.commit == "" {
		m.commit = "unknown"
	} else if s := strings.TrimSpace(outputOf(r.root, "git", "-c", "safe.directory=*", "status", "--porcelain",
		"--", "cmd", "fs", "header", "blockcipher", "keyring", "go.mod", "go.sum")); s != "" {
		// Name what was benchmarked beyond the commit.
		var files []string
		for _, l := range strings.Split(s, "\n") {
			if len(l) > 3 && !strings.HasSuffix(l, "_test.go") {
				files = append(files, strings.TrimSpace(l[3:]))
			}
		}
		if len(files) > 12 {
			files = append(files[:12], "...")
		}
		if len(files) > 0 {
			m.commit += " plus uncommitted changes to " + strings.Join(files, ", ")
		}
	}
	return m
}

func outputOf(dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, _ := cmd.Output()
	return string(out)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// verdict returns "PASS", "FAIL" or "" (no target, or not measured).
func verdict(ratio, target float64) string {
	switch {
	case target == 0 || nan(ratio):
		return ""
	case ratio >= target:
		return "PASS"
	default:
		return "FAIL"
	}
}

// memVerdicts evaluates the memory targets on the kmsfs medians.
type memCheck struct {
	label, value, target, result string
}

func (r *runner) memChecks() []memCheck {
	k := func(key string) float64 { return r.res.median(cfgKmsfs, key) }
	check := func(v, limit float64) string {
		if nan(v) {
			return ""
		}
		if v <= limit {
			return "PASS"
		}
		return "FAIL"
	}
	return []memCheck{
		{"flat in file size: peak RSS growth from a 1 MiB to a " + sizeLabel(r.o.seqMiB) + " file",
			fmtVal(k("hwm_growth"), "MiB"), fmt.Sprintf("≤ %g MiB", maxHWMGrowthMiB), check(k("hwm_growth"), maxHWMGrowthMiB)},
		{fmt.Sprintf("per open file (%d open at once): RSS", r.o.openFiles),
			fmtVal(k("open_rss_per_file"), "KiB"), fmt.Sprintf("≤ %g KiB", maxOpenRSSKiB), check(k("open_rss_per_file"), maxOpenRSSKiB)},
		{fmt.Sprintf("per open file (%d open at once): locked memory", r.o.openFiles),
			fmtVal(k("open_locked_per_file"), "B"), fmt.Sprintf("≤ %g B", maxOpenLockedB), check(k("open_locked_per_file"), maxOpenLockedB)},
	}
}

func sizeLabel(mibs int) string {
	if mibs%1024 == 0 {
		return fmt.Sprintf("%d GiB", mibs/1024)
	}
	return fmt.Sprintf("%d MiB", mibs)
}

func fmtVal(v float64, unit string) string {
	if nan(v) {
		return "–"
	}
	switch unit {
	case "MB/s", "MiB", "KiB":
		if math.Abs(v) >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.1f", v)
	case "IOPS", "B":
		return fmt.Sprintf("%.0f", v)
	case "s":
		return fmt.Sprintf("%.2f", v)
	case "s/GiB":
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func fmtRatio(v float64) string {
	if nan(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *runner) has(cfg string) bool { return contains(r.o.configs, cfg) }

// printSummary prints the main table on the terminal.
func (r *runner) printSummary(w io.Writer) {
	fmt.Fprintf(w, "\n%-30s %10s %10s %10s %10s %7s %6s\n", "workload (median)", "ext4", "passthru", "baseline", "kmsfs", "ratio", "")
	for _, m := range append(append([]metric{}, speedMetrics...), resourceMetrics...) {
		fmt.Fprintf(w, "%-30s", trunc(m.label+" ("+m.unit+")", 30))
		for _, c := range allConfigs {
			fmt.Fprintf(w, " %10s", fmtVal(r.res.median(c, m.key), m.unit))
		}
		ratio := r.res.ratio(cfgKmsfs, m)
		fmt.Fprintf(w, " %7s %6s\n", fmtRatio(ratio), verdict(ratio, m.target))
	}
	for _, mc := range r.memChecks() {
		fmt.Fprintf(w, "%-60s %10s %10s %6s\n", trunc(mc.label, 60), mc.value, mc.target, mc.result)
	}
}

func trunc(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// writeReport writes the chart and docs/PERFORMANCE.md.
func (r *runner) writeReport() error {
	chartRel := ""
	if r.o.chart != "" {
		if err := os.MkdirAll(filepath.Dir(r.o.chart), 0o755); err != nil {
			return err
		}
		if err := writeChart(r, r.o.chart); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		chartRel = r.o.chart
		if r.o.doc != "" {
			if rel, err := filepath.Rel(filepath.Dir(r.o.doc), r.o.chart); err == nil {
				chartRel = rel
			}
		}
		fmt.Printf("harness: wrote %s\n", r.o.chart)
	}
	if r.o.doc == "" {
		return nil
	}
	var b bytes.Buffer
	r.markdown(&b, chartRel)
	if err := os.WriteFile(r.o.doc, b.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("harness: wrote %s\n", r.o.doc)
	return nil
}

func (r *runner) markdown(b *bytes.Buffer, chart string) {
	o := r.o
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	pass, fail := 0, 0
	count := func(v string) {
		switch v {
		case "PASS":
			pass++
		case "FAIL":
			fail++
		}
	}
	for _, m := range speedMetrics {
		count(verdict(r.res.ratio(cfgKmsfs, m), m.target))
	}
	for _, mc := range r.memChecks() {
		count(mc.result)
	}

	p("# kmsfs performance\n\n")
	p("Generated by `%s` (`make bench` runs `tests/bench/run.sh`) on %s; do not edit by hand.\n", o.commandLine, r.finished.UTC().Format("2006-01-02 15:04 MST"))
	if o.quick {
		p("\n**This is a quick run** (%d repetition(s), small sizes): the reference numbers come from a full run.\n", o.reps)
	}
	p("\nkmsfs is compared with a FUSE loopback built from this repository's own code\n")
	p("(`tests/bench/loopback`) that encrypts nothing but whose daemon reads and writes every\n")
	p("byte itself, as any encrypting filesystem must: **the baseline**. Ratios are\n")
	p("kmsfs/baseline, taken within each repetition; the median over %d repetition(s) is shown.\n", o.reps)
	p("go-fuse's stock loopback, whose file I/O the kernel passes straight to the backing file\n")
	p("(FUSE passthrough), and plain ext4 are shown as the physical limits.\n\n")
	p("**Targets: %d pass, %d fail.**", pass, fail)
	if r.failures > 0 {
		p(" **%d workload run(s) failed** (see [Problems](#problems-seen-during-the-run));\n", r.failures)
		p("their targets are reported as not measured.")
	}
	p("\n\n")

	if chart != "" {
		p("![Throughput relative to the daemon-copy baseline](%s)\n\n", chart)
		p("Bars: speed relative to the baseline (1.0, dashed line; higher is better) for ext4 (grey),\n")
		p("the passthrough loopback (light blue), the baseline (dark blue) and kmsfs (orange). Bars\n")
		p("taller than the chart are cut and labelled with their value; the red tick on each kmsfs\n")
		p("bar is its target; the number under each group is kmsfs's ratio.\n\n")
	}

	p("## Throughput and latency\n\n")
	p("Speed ratio = kmsfs speed / baseline speed (for times: baseline time / kmsfs time), so\n")
	p("above 1 kmsfs is faster; for cold random reads the ratio is against ext4 on the same\n")
	p("disk (\"of ext4\" in the Target column), the physical limit there. Values are medians.\n")
	p("Random I/O runs twice: **cold** (page cache dropped before each run, as on a volume\n")
	p("larger than memory: reads go to the disk, and a write of part of a page reads it first)\n")
	p("and **warm** (the backing files read into the page cache first).\n\n")
	p("| Workload | Unit | ext4 | passthrough | baseline | kmsfs | kmsfs ratio | Target | Result |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|---|\n")
	for _, m := range speedMetrics {
		ratio := r.res.ratio(cfgKmsfs, m)
		unit := m.unit
		if unit == "s" {
			unit = "s (lower is better)"
		}
		label := m.label
		if strings.HasPrefix(m.key, "seq_") {
			label += ", " + sizeLabel(o.seqMiB)
		}
		target := fmt.Sprintf("≥ %g", m.target)
		if m.refConfig() != cfgBaseline {
			target += " of " + m.refConfig()
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label, unit,
			r.cell(cfgExt4, m), r.cell(cfgPassthrough, m), r.cell(cfgBaseline, m), r.cell(cfgKmsfs, m),
			fmtRatio(ratio), target, bold(r.verdictCell(ratio, m.target)))
	}

	p("\n## Daemon resources\n\n")
	p("Cost ratio = kmsfs / baseline (below 1 kmsfs uses less). ext4 has no daemon.\n\n")
	p("| Metric | Unit | passthrough | baseline | kmsfs | kmsfs/baseline |\n")
	p("|---|---|--:|--:|--:|--:|\n")
	for _, m := range resourceMetrics {
		label := strings.ReplaceAll(m.label, "big file", sizeLabel(o.seqMiB)+" file")
		label = strings.ReplaceAll(label, "N files", fmt.Sprintf("%d files", o.openFiles))
		p("| %s | %s | %s | %s | %s | %s |\n", label, m.unit,
			r.cell(cfgPassthrough, m), r.cell(cfgBaseline, m), r.cell(cfgKmsfs, m), fmtRatio(r.res.ratio(cfgKmsfs, m)))
	}
	p("\n| Memory target (kmsfs) | kmsfs | Target | Result |\n|---|--:|--:|---|\n")
	for _, mc := range r.memChecks() {
		res := mc.result
		if res == "" && r.has(cfgKmsfs) && r.wants("mem") {
			res = "not measured"
		}
		p("| %s | %s | %s | %s |\n", mc.label, mc.value, mc.target, bold(res))
	}

	if len(r.notes) > 0 {
		p("\n## Problems seen during the run\n\n")
		for _, n := range r.notes {
			p("- %s\n", strings.ReplaceAll(n, r.work, "$WORK"))
		}
	}

	p("\n## Machine\n\n")
	i := r.info
	p("| | |\n|---|---|\n")
	p("| CPUs (nproc) | %d × %s |\n", i.nproc, i.cpu)
	p("| Kernel | %s |\n", i.kernel)
	p("| Memory | %s |\n", i.mem)
	p("| Disk (scratch directory) | %s |\n", i.disk)
	p("| Go | %s |\n", i.goVersion)
	p("| fio | %s |\n", i.fio)
	p("| kmsfs commit | %s |\n", i.commit)
	p("| Date | %s to %s |\n", r.started.UTC().Format("2006-01-02 15:04"), r.finished.UTC().Format("15:04 MST"))
	p("| Load average (1, 5, 15 min) | %s at start, %s at end |\n", i.loadStart, i.loadEnd)
	var ra []string
	for _, c := range allConfigs {
		if v, ok := i.readahead[c]; ok {
			ra = append(ra, c+" "+v+" KiB")
		}
	}
	if len(ra) > 0 {
		p("| FUSE readahead (read_ahead_kb) | %s |\n", strings.Join(ra, ", "))
	}
	p("\nThe machine may be shared with other jobs: compare ratios from the same run, not\n")
	p("absolute numbers across runs.\n")

	p("\n## What kmsfs does for speed\n\n")
	p("- Requests of up to 1 MiB (MaxWrite) and a kernel readahead of 4 MiB, which the kernel\n")
	p("  would otherwise leave at 128 KiB: one round trip, backing read or write per MiB, and\n")
	p("  up to four read requests in the daemon at once during a sequential read.\n")
	p("- Format version 3 (what `kmsfs init` makes) stores each block's ciphertext alone on\n")
	p("  whole pages, its nonce and tag in a metadata page per 128 blocks: a 4 KiB overwrite\n")
	p("  writes whole pages and the backing file system reads nothing first (in version 2 a\n")
	p("  stored block straddled two pages, which had to be read). A file of up to 1987 bytes\n")
	p("  is stored inline, header and content in one page: one disk read to open and read it.\n")
	p("  A small read asks for its block (fadvise WILLNEED) before reading the block's entry, so\n")
	p("  that on a cold cache the two disk reads overlap.\n")
	p("- A large write is sealed on several cores (version 2: in 128 KiB steps, each written\n")
	p("  to the backing file as soon as it is sealed, `fs/cryptfile/pipeline.go`). A write of 256 KiB or\n")
	p("  more then starts the writeback of what it wrote (`sync_file_range`, on a goroutine of\n")
	p("  its own, off the reply's path), so the disk works while the daemon encrypts the next\n")
	p("  requests and the final fsync finds little left: 1 GiB + fsync went from 1.49-1.82 s\n")
	p("  to 1.19-1.78 s (4 rounds, same minute), and to a median of 1.27 s against 1.38 s\n")
	p("  (11 rounds) once the call left the reply's path.\n")
	p("- A read of 256 KiB or more of ciphertext goes to the disk with O_DIRECT through a\n")
	p("  second descriptor of the backing file (`fs/cryptfile/direct.go`; in version 3 the blocks\n")
	p("  and the metadata pages between them in one read): the disk fills an aligned\n")
	p("  pooled buffer, with no page allocation and no copy out of the backing file's page\n")
	p("  cache, which were two thirds of the daemon's CPU on the cold sequential read (daemon\n")
	p("  CPU 1.5-1.8 s/GiB before, 0.6 after). The plaintext is cached on the mount, so\n")
	p("  caching the ciphertext too would hold every byte twice. At most four such reads are\n")
	p("  in flight at once (memory). Smaller reads keep the page cache. Every read is\n")
	p("  decrypted step by step on the request's own core, so the plaintext is still in that\n")
	p("  core's cache when the reply copies it (decrypted on another core, that copy cost four\n")
	p("  times as much). Aligned reads decrypt straight into the reply buffer, aligned writes\n")
	p("  encrypt straight from the request; buffers come from pools.\n")
	p("- No socket in Go's network poller and no timer while the key cache is empty: idle\n")
	p("  daemon threads then sleep on a futex instead of in epoll, which made every request's\n")
	p("  wakeup cheaper (4 KiB random reads, 1 job: about +20%%).\n")
	p("- Opening a file reads its header with one disk read that also brings its first\n")
	p("  128 KiB; key slots are checked without a JSON decoder; local keys unwrap in memory,\n")
	p("  with no timer; one HKDF extraction yields the commitment, MAC and content keys\n")
	p("  (`BenchmarkOpenKeys` in `fs/`: 14.3 µs per open before that work, 7.9 µs after).\n")
	p("- Appends are left to the file system's delayed allocation (a failed one is cut back),\n")
	p("  so files stay in one extent; overwrites inside a file without holes skip the\n")
	p("  fallocate that protects other writes against a full disk (one lseek per file tells).\n")
	p("  Only what overwrites existing ciphertext is copied into the crash journal (in version 3\n")
	p("  a 4 KiB overwrite copies its block and its entry: one version-4 record).\n")
	p("- A file opened again while its backing file is unchanged keeps its pages in the\n")
	p("  kernel's cache (FOPEN_KEEP_CACHE; any change through the mount or behind it drops\n")
	p("  them): a warm re-read of the tree costs open and close only. The workloads above\n")
	p("  start cold and do not show it.\n")
	p("- No writeback cache: with it, writes acknowledged to applications would live only in\n")
	p("  the kernel until flushed and be lost if the daemon died; kmsfs hands every write to\n")
	p("  the backing file before acknowledging it (docs/SECURITY.md).\n")
	p("\n## What bounds each workload\n\n")
	p("Measured with `perf record -g` on the daemon, kernel tracepoints (`fuse_request_end`,\n")
	p("`block_rq_issue`) and `/sys/block/*/stat` deltas; the commands are in `--profile` (this\n")
	p("harness) and were run by hand for the cold random read (December 2026, this machine):\n\n")
	p("- **4 KiB random read, cold**: FUSE round trips. Every FUSE READ is 4 KiB and costs one\n")
	p("  disk request; a no-crypto loopback that copies every byte reaches only about half of\n")
	p("  ext4 with 1 job (one round trip through /dev/fuse takes about as long as the disk read)\n")
	p("  and a third with 4 jobs (two cores shared by fio, the kernel and the daemon). Of the\n")
	p("  daemon's CPU: the backing read 33%%, Go's scheduler handing threads back and forth\n")
	p("  around blocking system calls about 40%% (`sysmon`, `retake`), reading the request and\n")
	p("  writing the reply 23%%, AES-GCM under 2%%. Turning off go-fuse's splice attempt before\n")
	p("  every reply (3 of 8 system calls a read) took 28%% off the daemon's CPU per read. The\n")
	p("  0.9-of-ext4 target is beyond FUSE on this machine, and is shown failed.\n")
	p("- **4 KiB random write, cold**: the daemon. The version-3 layout removed the disk reads\n")
	p("  (version 2 read two pages per overwrite); what remains is the crash journal: a copy of\n")
	p("  the block and its entry, a record page and its clearing, about five page-cache writes\n")
	p("  and system calls per overwrite where the loopback makes one.\n")
	p("- **Sequential write and read**: AES-GCM and the copies through FUSE; the disk only\n")
	p("  at the fsync.\n")
	p("- **Small-file tree**: opens and lookups. Each open unwraps the file's data key and\n")
	p("  derives its keys (about 30 µs of daemon CPU with a local key, half of it in\n")
	p("  runtime/secret); each lookup of a name in a directory opens the directory (no\n")
	p("  symlink followed on the way), and with encrypted names each name is encrypted.\n")
	p("\n## Method\n\n")
	p("- Every configuration uses a directory on the same disk, under a scratch directory.\n")
	p("  The baseline and kmsfs use the same go-fuse version and the same mount options\n")
	p("  (the baseline mounts with kmsfs's own `fs.KernelOptions`: DirectMount, MaxWrite 1 MiB,\n")
	p("  1 s entry/attribute/negative timeouts, default_permissions, locks; both set the kernel\n")
	p("  readahead of their mount to 4 MiB with `fs.SetReadahead`, as the passthrough loopback does).\n")
	p("- Within each repetition every workload runs on each configuration in turn (the order\n")
	p("  rotates between repetitions), so kmsfs and the baseline are measured minutes apart.\n")
	p("- Each step starts a fresh daemon (unmount, mount): FUSE caches are cold and the\n")
	p("  daemon's peak RSS belongs to that step.\n")
	p("- Before every timed step (and after every cache drop) the harness runs `sync` and waits\n")
	p("  until no disk has read or written a sector for 2 s (at most 30 s), so that one step's\n")
	p("  writeback does not land in the next step's time, whichever configuration runs it.\n")
	p("- **Sequential**: `dd` writes %s from /dev/zero in 1 MiB writes with `conv=fsync`\n", sizeLabel(o.seqMiB))
	p("  (the time includes the fsync); the file is read back with `dd` after `sync` and\n")
	p("  dropping the page cache and a remount.\n")
	p("- **Random 4 KiB**: fio, psync engine, buffered (`direct=0`), time based (%d s), one %d MiB\n", o.fioRuntime, o.fioMiB)
	p("  file per job, 1 and 4 jobs. The files are laid out beforehand in 1 MiB writes, and\n")
	p("  the filesystem is remounted before each run. **Cold** runs start after `sync` and\n")
	p("  dropping the page cache: on every configuration reads go to the disk, and a write of\n")
	p("  part of a page reads the page first (in version 3 only a metadata page, once per 128\n")
	p("  blocks). **Warm** runs start with the backing files\n")
	p("  read into the page cache (`cat $BACKING/fio/rand.* > /dev/null`): fio invalidates the\n")
	p("  file's cache at the start of every pass and reads each block once per pass, so every\n")
	p("  4 KiB read misses the mount's page cache and is a round trip to the daemon, which finds\n")
	p("  the backing data in memory; on ext4, whose cache fio drops, it goes to the disk.\n")
	p("  Random writes are buffered by ext4; a FUSE mount without writeback cache sends every\n")
	p("  write to its daemon (the passthrough loopback to the backing file directly).\n")
	p("- **Small-file tree**: `%s` (%d entries) is copied in with `cp -a` (source already in\n", o.treeSrc, r.treeEntries)
	p("  the page cache); then, after dropping caches and a remount, listed with `find -ls`\n")
	p("  (a stat of every entry) and read completely with `tar` into a pipe; then deleted with\n")
	p("  `rm -rf`. Each step runs on every configuration before the next step starts: ext4\n")
	p("  without a journal (the benchmark disk has none) avoids reusing inodes deleted in the\n")
	p("  last minutes, so creating files right after another configuration's delete would be\n")
	p("  slowed down by its inode allocator.\n")
	p("  kmsfs runs a volume as `kmsfs init` makes it: format version 3, names encrypted\n")
	p("  (each directory's ID is one more small file to write on `mkdir` and to read on the\n")
	p("  first listing); `--init-args=--plaintext-names` measures names in clear.\n")
	p("- **Resources**: peak RSS is the largest `VmHWM` of the configuration's daemons in a\n")
	p("  repetition; locked memory is `VmLck`, polled every 50 ms. CPU is the daemon's\n")
	p("  utime+stime (`/proc/PID/stat`) over the workload, divided by the GiB moved.\n")
	p("- **Memory targets**: the peak RSS after writing and reading a 1 MiB file is compared\n")
	p("  with that after the %s file of the sequential test (fresh daemons both). For open\n", sizeLabel(o.seqMiB))
	p("  files, %d files of 4 KiB are looked up (stat), then opened at once and 4 KiB read from\n", o.openFiles)
	p("  each; the daemon's `VmRSS` and `VmLck` before and after, divided by %d, are the cost of\n", o.openFiles)
	p("  one open file. The issue asks for \"flat\" and \"a small constant\"; the limits in the\n")
	p("  table are this harness's reading of those words.\n")

	p("\n## Commands\n\n")
	p("Run: `make bench` (all options: `bash tests/bench/run.sh --help`; a short run:\n")
	p("`bash tests/bench/run.sh --quick`). This run: `%s`.\n\n", o.commandLine)
	p("Each workload ran these commands (`$MNT` is the configuration's mount point or, for\n")
	p("ext4, its plain directory; `$BACKING` the directory a daemon serves; `$WORK` the scratch\n")
	p("directory; `$TREE` the source tree; `kmsfs` and `loopback` are built from this tree):\n\n```sh\n")
	for _, c := range r.cmds {
		p("%s\n", c)
	}
	p("```\n")

	p("\n## Mount options as the kernel shows them\n\n")
	for _, c := range allConfigs {
		if v, ok := r.mountOpts[c]; ok {
			p("- %s: `%s`\n", c, v)
		}
	}
	if k, b := r.mountOpts[cfgKmsfs], r.mountOpts[cfgBaseline]; k != "" && b != "" {
		if k == b {
			p("\nkmsfs and the baseline mount with identical kernel-visible options.\n")
		} else {
			p("\n**kmsfs and the baseline mount with different kernel-visible options**: the\n")
			p("comparison is not like for like until `tests/bench/loopback/options.go` follows `fs/mount.go`.\n")
		}
	}

	p("\n## Every repetition\n\n")
	p("| Metric | Config |")
	for i := 0; i < o.reps; i++ {
		p(" rep %d |", i+1)
	}
	p("\n|---|---|%s\n", strings.Repeat("--:|", o.reps))
	for _, m := range append(append([]metric{}, speedMetrics...), resourceMetrics...) {
		for _, c := range allConfigs {
			vs := r.res.Values[c][m.key]
			if len(vs) == 0 {
				continue
			}
			p("| %s (%s) | %s |", m.label, m.unit, c)
			for i := 0; i < o.reps; i++ {
				p(" %s |", fmtVal(r.res.get(c, m.key, i), m.unit))
			}
			p("\n")
		}
	}
}

// verdictCell is verdict, or "not measured" for a target whose numbers
// are missing.
func (r *runner) verdictCell(ratio, target float64) string {
	v := verdict(ratio, target)
	if v == "" && target > 0 && r.has(cfgKmsfs) && r.has(cfgBaseline) {
		return "not measured"
	}
	return v
}

func (r *runner) cell(cfg string, m metric) string {
	if !r.has(cfg) || (m.daemonOnly && cfg == cfgExt4) {
		return "–"
	}
	return fmtVal(r.res.median(cfg, m.key), m.unit)
}

func bold(s string) string {
	if s == "" {
		return ""
	}
	return "**" + s + "**"
}
