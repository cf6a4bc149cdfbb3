// Command harness runs kmsfs's end-to-end benchmarks ("make bench").
//
// It builds kmsfs and the baseline loopback (tests/bench/loopback), then
// runs every workload on four filesystems over the same disk: plain ext4,
// go-fuse's stock loopback with kernel passthrough (the physical limit of
// FUSE), a loopback whose daemon copies every byte (the baseline an
// encrypting filesystem is held to) and kmsfs. Configurations are
// interleaved within each repetition; the report gives medians, the
// kmsfs/baseline ratio and the verdict against each target, and is
// written to docs/PERFORMANCE.md with a chart, docs/performance.png.
//
// It must run as root (it mounts, and drops the page cache for cold
// reads). It exits 0 when the measurements were taken, whatever they
// show; 1 when something broke; 130 when interrupted. Every mount is
// undone on the way out.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const usage = `Usage: harness [options]

Benchmarks kmsfs against a daemon-copy loopback baseline, the stock
passthrough loopback and plain ext4, and writes docs/PERFORMANCE.md and
docs/performance.png. Run as root from anywhere inside the repository
(tests/bench/run.sh does).

Relative paths are taken from the repository root.

Options:
    --quick              a short run: 1 repetition, 256 MiB sequential file,
                         64 MiB fio files, 5 s fio runs
    --reps N             repetitions (default 5: the disk of a VM is noisy)
    --seq-mib N          size of the sequential file in MiB (default 1024)
    --fio-mib N          size of each fio job's file in MiB (default 256)
    --fio-runtime S      seconds per fio run (default 15)
    --tree DIR           source tree of the small-file workload
                         (default: the Go source tree, $GOROOT/src)
    --open-files N       files held open for the memory test (default 1000)
    --configs LIST       comma-separated subset of ext4,passthrough,baseline,kmsfs
    --workloads LIST     comma-separated subset of seq,rand,tree,mem
    --readahead-kb N     set this kernel readahead on every FUSE mount
                         (default: leave the kernel's)
    --workdir DIR        where to create the scratch directory; it must be on
                         the disk to measure (default /var/tmp)
    --keep               keep the scratch directory
    --doc FILE           report to write (default docs/PERFORMANCE.md; "" = none)
    --chart FILE         chart to write (default docs/performance.png)
    --json FILE          also write the raw measurements as JSON
    --kmsfs-bin FILE     use this kmsfs binary instead of building ./cmd/kmsfs
    --init-args ARGS     extra "kmsfs init" arguments (e.g. --plaintext-names)
    --profile DIR        record perf profiles of the kmsfs and baseline daemons
                         during the sequential, random and tree copy/read
                         workloads into DIR, with text summaries (timings are
                         then perturbed: no report is written)
`

type options struct {
	quick        bool
	reps         int
	seqMiB       int
	fioMiB       int
	fioRuntime   int
	treeSrc      string
	openFiles    int
	configs      []string
	workloads    []string
	readaheadKB  int
	workdir      string
	keep         bool
	doc, chart   string
	jsonOut      string
	profileDir   string
	kmsfsBin     string
	initArgs     string // extra "kmsfs init" arguments, space separated
	commandLine  string
	explicitReps bool
}

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fl := flag.NewFlagSet("harness", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.BoolVar(&o.quick, "quick", false, "")
	fl.IntVar(&o.reps, "reps", 5, "")
	fl.IntVar(&o.seqMiB, "seq-mib", 1024, "")
	fl.IntVar(&o.fioMiB, "fio-mib", 256, "")
	fl.IntVar(&o.fioRuntime, "fio-runtime", 15, "")
	fl.StringVar(&o.treeSrc, "tree", filepath.Join(runtime.GOROOT(), "src"), "")
	fl.IntVar(&o.openFiles, "open-files", 1000, "")
	cfgs := fl.String("configs", strings.Join(allConfigs, ","), "")
	wls := fl.String("workloads", "seq,rand,tree,mem", "")
	fl.IntVar(&o.readaheadKB, "readahead-kb", 0, "")
	fl.StringVar(&o.workdir, "workdir", "/var/tmp", "")
	fl.BoolVar(&o.keep, "keep", false, "")
	fl.StringVar(&o.doc, "doc", "docs/PERFORMANCE.md", "")
	fl.StringVar(&o.chart, "chart", "docs/performance.png", "")
	fl.StringVar(&o.jsonOut, "json", "", "")
	fl.StringVar(&o.profileDir, "profile", "", "")
	fl.StringVar(&o.kmsfsBin, "kmsfs-bin", "", "")
	fl.StringVar(&o.initArgs, "init-args", "", "")
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() != 0 {
		return nil, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["reps"] {
			o.reps = 1
		}
		if !set["seq-mib"] {
			o.seqMiB = 256
		}
		if !set["fio-mib"] {
			o.fioMiB = 64
		}
		if !set["fio-runtime"] {
			o.fioRuntime = 5
		}
	}
	if o.reps < 1 || o.seqMiB < 2 || o.fioMiB < 1 || o.fioRuntime < 1 || o.openFiles < 1 {
		return nil, errors.New("--reps, --seq-mib (>= 2), --fio-mib, --fio-runtime and --open-files must be positive")
	}
	o.configs = splitList(*cfgs)
	for _, c := range o.configs {
		if !contains(allConfigs, c) {
			return nil, fmt.Errorf("unknown configuration %q (known: %s)", c, strings.Join(allConfigs, ","))
		}
	}
	o.workloads = splitList(*wls)
	for _, w := range o.workloads {
		if !contains([]string{"seq", "rand", "tree", "mem"}, w) {
			return nil, fmt.Errorf("unknown workload %q (known: seq,rand,tree,mem)", w)
		}
	}
	o.commandLine = strings.Join(append([]string{"bash tests/bench/run.sh"}, args...), " ")
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) (code int) {
	o, err := parseOptions(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: error: %v\nharness: hint: run with --help for usage\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "harness: error: must run as root (it mounts FUSE filesystems and drops the page cache)")
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var interrupted atomic.Bool
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nharness: %v: stopping and unmounting\n", s)
		interrupted.Store(true)
		cancel()
	}()

	r, err := newRunner(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: error: %v\n", err)
		return 1
	}
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "harness: panic: %v\n", p)
			code = 1
		}
		for _, n := range cleanup(r.cfgs, r.work) {
			fmt.Fprintf(os.Stderr, "harness: cleanup: %s\n", n)
		}
		if o.keep {
			fmt.Printf("harness: scratch directory kept: %s\n", r.work)
			return
		}
		if r.failures > 0 || code == 1 {
			// Keep the servers' logs: they say why.
			kept := r.work + "-logs"
			if os.Rename(filepath.Join(r.work, "logs"), kept) == nil {
				fmt.Printf("harness: server logs kept in %s\n", kept)
			}
		}
		os.RemoveAll(r.work)
	}()

	err = r.runAll()
	if interrupted.Load() {
		return 130
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: error: %v\n", err)
		return 1
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(r.res, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "harness: error: %v\n", err)
			return 1
		}
	}
	r.printSummary(os.Stdout)
	if o.profileDir != "" {
		fmt.Printf("harness: profiles in %s (no report written: timings were perturbed)\n", o.profileDir)
		return 0
	}
	if err := r.writeReport(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: error: %v\n", err)
		return 1
	}
	if r.failures > 0 {
		fmt.Fprintf(os.Stderr, "harness: error: %d workload(s) failed (listed in the report)\n", r.failures)
		return 1
	}
	return 0
}

// runner holds the state of one benchmark run.
type runner struct {
	ctx  context.Context
	o    *options
	root string // repository root
	work string // scratch directory
	cfgs []*fsConfig
	res  *results
	info *machineInfo

	kmsfsBin, loopbackBin string
	treeEntries           int
	started, finished     time.Time
	cmds                  []string
	cmdSeen               map[string]bool
	notes                 []string
	failures              int
	mountOpts             map[string]string
}

func newRunner(ctx context.Context, o *options) (*runner, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.workdir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.workdir, "kmsfs-bench-")
	if err != nil {
		return nil, err
	}
	work, _ = filepath.EvalSymlinks(work)
	r := &runner{ctx: ctx, o: o, root: root, work: work, res: newResults(o.reps),
		cmdSeen: map[string]bool{}, mountOpts: map[string]string{}}
	for _, p := range []*string{&o.doc, &o.chart, &o.jsonOut, &o.profileDir, &o.kmsfsBin} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(root, *p)
		}
	}
	return r, nil
}

// repoRoot finds the kmsfs module root above the current directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/kmsfs/kmsfs\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the kmsfs repository (no go.mod of github.com/kmsfs/kmsfs above the current directory)")
		}
		dir = parent
	}
}

func (r *runner) logf(format string, a ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

// record remembers a command for the report, with the scratch paths
// replaced by names.
func (r *runner) record(c *fsConfig, argv []string) {
	s := shellQuote(argv)
	if c != nil {
		s = strings.ReplaceAll(s, c.mnt, "$MNT")
		s = strings.ReplaceAll(s, c.backing, "$BACKING")
	}
	s = strings.ReplaceAll(s, r.kmsfsBin+" ", "kmsfs ")
	s = strings.ReplaceAll(s, r.loopbackBin+" ", "loopback ")
	s = strings.ReplaceAll(s, r.work, "$WORK")
	s = strings.ReplaceAll(s, r.o.treeSrc, "$TREE")
	r.recordRaw(s)
}

func (r *runner) recordRaw(s string) {
	if !r.cmdSeen[s] {
		r.cmdSeen[s] = true
		r.cmds = append(r.cmds, s)
	}
}

func shellQuote(argv []string) string {
	var parts []string
	for _, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t'\"$*?|&;<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// command runs argv to completion, with stdout going to out (discarded if
// nil), and returns how long it took.
func (r *runner) command(c *fsConfig, out io.Writer, argv ...string) (time.Duration, error) {
	r.record(c, argv)
	cmd := exec.CommandContext(r.ctx, argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stdout = out
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w: %s", shellQuote(argv), err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

func (r *runner) setup() error {
	r.logf("building kmsfs and the baseline loopback")
	bin := filepath.Join(r.work, "bin")
	r.kmsfsBin = filepath.Join(bin, "kmsfs")
	r.loopbackBin = filepath.Join(bin, "loopback")
	builds := [][2]string{{r.loopbackBin, "./tests/bench/loopback"}}
	if r.o.kmsfsBin != "" {
		r.kmsfsBin = r.o.kmsfsBin
	} else {
		builds = append(builds, [2]string{r.kmsfsBin, "./cmd/kmsfs"})
	}
	for _, b := range builds {
		cmd := exec.CommandContext(r.ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = r.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b[1], err, out)
		}
	}
	if err := ensureFio(r); err != nil {
		return err
	}
	if r.o.profileDir != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			return errors.New("--profile needs perf (Debian package linux-perf)")
		}
		if err := os.MkdirAll(r.o.profileDir, 0o755); err != nil {
			return err
		}
	}
	logs := filepath.Join(r.work, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	for _, name := range r.o.configs {
		c := &fsConfig{name: name, logFile: filepath.Join(logs, name+".log")}
		switch name {
		case cfgExt4:
			c.backing = filepath.Join(r.work, "ext4")
			c.mnt = c.backing
		case cfgPassthrough, cfgBaseline:
			c.backing = filepath.Join(r.work, name+".orig")
			c.mnt = filepath.Join(r.work, name+".mnt")
			var flags []string
			if name == cfgPassthrough {
				flags = append(flags, "--passthrough")
			}
			c.server = func() []string {
				return append(append([]string{r.loopbackBin, "-f"}, flags...), "--log-file", c.logFile, c.backing, c.mnt)
			}
			c.display = "tests/bench/loopback -f " + strings.Join(append(flags, "ORIGDIR MNT"), " ")
		case cfgKmsfs:
			c.backing = filepath.Join(r.work, "kmsfs.cipher")
			c.mnt = filepath.Join(r.work, "kmsfs.mnt")
			c.server = func() []string {
				return []string{r.kmsfsBin, "mount", "-f", "--log-file", c.logFile, c.backing, c.mnt}
			}
			c.display = "kmsfs mount -f CIPHERDIR MNT"
		}
		for _, d := range []string{c.backing, c.mnt} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if name == cfgKmsfs {
			key := filepath.Join(r.work, "local.key")
			argv := append([]string{r.kmsfsBin, "init", "--key", "local://" + key}, strings.Fields(r.o.initArgs)...)
			argv = append(argv, c.backing)
			if _, err := r.command(c, nil, argv...); err != nil {
				return err
			}
		}
		r.cfgs = append(r.cfgs, c)
	}
	n, err := countEntries(r.o.treeSrc)
	if err != nil {
		return fmt.Errorf("tree source: %w", err)
	}
	r.treeEntries = n
	r.info = gatherMachineInfo(r)
	return nil
}

// ensureFio installs fio from Debian if it is missing.
func ensureFio(r *runner) error {
	if _, err := exec.LookPath("fio"); err == nil {
		return nil
	}
	r.logf("fio is missing: installing it with apt-get")
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := func() error {
		cmd := exec.CommandContext(r.ctx, "apt-get", "install", "-y", "--no-install-recommends", "fio")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	if err := install(); err != nil {
		cmd := exec.CommandContext(r.ctx, "apt-get", "update")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get update: %w", err)
		}
		if err := install(); err != nil {
			return fmt.Errorf("apt-get install fio: %w", err)
		}
	}
	_, err := exec.LookPath("fio")
	return err
}

// step runs one workload on one configuration. A failure (a filesystem
// error, a command that failed) is recorded, the configuration is
// unmounted, and the run goes on: the report then shows what failed and
// the harness exits 1. Only an interrupt stops the run.
func (r *runner) step(c *fsConfig, rep int, what string, fn func() error) error {
	err := fn()
	if err == nil {
		return nil
	}
	if r.ctx.Err() != nil {
		return err
	}
	r.failures++
	msg := fmt.Sprintf("repetition %d, %s on %s failed: %v", rep+1, what, c.name, err)
	if c.isFUSE() {
		msg += fmt.Sprintf(" (end of the server log: %q)", lastLines(c.logFile, 4))
	}
	r.logf("FAILED: %s", msg)
	r.notes = append(r.notes, msg)
	if _, _, err := c.unmount(); err != nil {
		r.notes = append(r.notes, err.Error())
	}
	return nil
}

// lastLines returns the last n lines of a file.
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// order returns the configurations in the order of repetition rep: rotated
// so that no configuration always runs first or last.
func (r *runner) order(rep int) []*fsConfig {
	n := len(r.cfgs)
	out := make([]*fsConfig, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, r.cfgs[(i+rep)%n])
	}
	return out
}

func (r *runner) wants(w string) bool { return contains(r.o.workloads, w) }

func (r *runner) runAll() error {
	r.started = time.Now()
	if err := r.setup(); err != nil {
		return err
	}
	if r.wants("tree") {
		// The source tree is read from the page cache by every
		// configuration alike.
		if _, err := r.command(nil, io.Discard, "tar", "-C", r.o.treeSrc, "-cf", "-", "."); err != nil {
			return err
		}
	}
	for rep := 0; rep < r.o.reps; rep++ {
		r.logf("=== repetition %d of %d", rep+1, r.o.reps)
		if r.wants("seq") {
			for _, c := range r.order(rep) {
				if err := r.step(c, rep, "sequential", func() error { return r.seq(c, rep) }); err != nil {
					return err
				}
			}
		}
		if r.wants("rand") {
			for _, v := range fioVariants {
				for _, c := range r.order(rep) {
					if err := r.step(c, rep, v.key, func() error { return r.fio(c, rep, v) }); err != nil {
						return err
					}
				}
			}
		}
		if r.wants("tree") {
			phases := []struct {
				name string
				fn   func(*fsConfig, int) error
			}{{"tree copy", r.treeCopy}, {"tree list and read", r.treeRead}, {"tree delete", r.treeRemove}}
			for _, ph := range phases {
				for _, c := range r.order(rep) {
					if err := r.step(c, rep, ph.name, func() error { return ph.fn(c, rep) }); err != nil {
						return err
					}
				}
			}
		}
		if r.wants("mem") {
			for _, c := range r.order(rep) {
				if err := r.step(c, rep, "memory", func() error { return r.memory(c, rep) }); err != nil {
					return err
				}
			}
		}
		for _, c := range r.cfgs {
			b, s := r.res.get(c.name, "hwm_big", rep), r.res.get(c.name, "hwm_small", rep)
			if b == b && s == s { // both measured (not NaN)
				r.res.set(c.name, "hwm_growth", rep, b-s)
			}
		}
	}
	r.finished = time.Now()
	r.info.loadEnd = loadavg()
	return nil
}
