// Command loopback is the baseline of the kmsfs benchmarks: a go-fuse
// loopback with no encryption.
//
// By default its daemon reads and writes every byte itself (pread/pwrite
// on the backing file, replies with fuse.ReadResultData), as any
// encrypting filesystem must: this is the fair baseline for kmsfs. With
// --passthrough it is go-fuse's stock loopback, whose file handles let the
// kernel pass reads and writes straight to the backing file (FUSE
// passthrough on recent kernels): the physical limit of a FUSE mount.
//
// Mount options are kmsfs's own (see options.go). Like "kmsfs mount", it
// returns once the mount is ready and serves in the background, or with
// -f stays in the foreground; SIGINT or SIGTERM unmounts.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	kmsfs "github.com/kmsfs/kmsfs/fs"
)

const usage = `Usage: loopback [options] ORIGDIR MOUNTPOINT

Mounts ORIGDIR at MOUNTPOINT through FUSE with kmsfs's mount options and
no encryption. Returns once the mount is ready (the server keeps running
in the background). SIGINT or SIGTERM to the server unmounts.

Options:
    -f, --foreground     stay in the foreground
        --passthrough    go-fuse's stock loopback (kernel passthrough of
                         file I/O) instead of a daemon that copies every byte
    -l, --log-file F     append the server's log to F
        --debug          log every FUSE request
`

// envReadyFD names the descriptor on which a background server reports
// that the mount is ready ("0 \n") or why it failed ("1 message\n").
const envReadyFD = "LOOPBACK_READY_FD"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fl := flag.NewFlagSet("loopback", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fg := fl.Bool("foreground", false, "")
	fl.BoolVar(fg, "f", false, "")
	passthrough := fl.Bool("passthrough", false, "")
	logFile := fl.String("log-file", "", "")
	fl.StringVar(logFile, "l", "", "")
	debug := fl.Bool("debug", false, "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(usage)
			return 0
		}
		return errorf(2, "%v", err)
	}
	if fl.NArg() != 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	orig, _ := filepath.Abs(fl.Arg(0))
	mnt, _ := filepath.Abs(fl.Arg(1))

	if !*fg && os.Getenv(envReadyFD) == "" {
		return spawnServer(args)
	}

	var logw io.Writer = os.Stderr
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return errorf(1, "log file: %v", err)
		}
		defer f.Close()
		logw = f
	}
	logger := log.New(logw, "", log.LstdFlags)
	ready := readyReporter()

	var root gofs.InodeEmbedder
	name := "loopback-copy"
	if *passthrough {
		name = "loopback-passthrough"
		r, err := gofs.NewLoopbackRoot(orig)
		if err != nil {
			return ready(1, err.Error())
		}
		root = r
	} else {
		r, err := newCopyRoot(orig)
		if err != nil {
			return ready(1, err.Error())
		}
		root = r
	}
	// As kmsfs: the kernel has already applied the caller's umask.
	syscall.Umask(0)
	opts := mountOptions(name, orig)
	opts.MountOptions.Debug = *debug
	opts.Logger = logger
	srv, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		return ready(1, fmt.Sprintf("mount %s: %v", mnt, err))
	}
	// The same kernel readahead as kmsfs (fs.Mount sets it too).
	if err := kmsfs.SetReadahead(mnt, kmsfs.ReadaheadKB); err != nil {
		logger.Printf("loopback: %v", err)
	}
	logger.Printf("loopback: serving %s at %s (%s)", orig, mnt, name)
	ready(0, "")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sig {
			logger.Printf("loopback: %v: unmounting %s", s, mnt)
			if err := srv.Unmount(); err != nil {
				logger.Printf("loopback: unmount %s: %v", mnt, err)
			}
		}
	}()
	srv.Wait()
	logger.Printf("loopback: %s unmounted", mnt)
	return 0
}

func errorf(code int, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "loopback: error: "+format+"\n", a...)
	return code
}

// readyReporter returns the function the server calls once, with code 0
// when the mount is ready or an exit code and a message when it failed.
func readyReporter() func(code int, msg string) int {
	fdStr := os.Getenv(envReadyFD)
	if fdStr == "" {
		return func(code int, msg string) int {
			if code != 0 {
				return errorf(code, "%s", msg)
			}
			return 0
		}
	}
	os.Unsetenv(envReadyFD)
	fd, _ := strconv.Atoi(fdStr)
	w := os.NewFile(uintptr(fd), "ready")
	return func(code int, msg string) int {
		fmt.Fprintf(w, "%d %s\n", code, strings.ReplaceAll(msg, "\n", " "))
		w.Close()
		return code
	}
}

// spawnServer re-executes the program in a new session and waits until it
// reports that the mount is ready.
func spawnServer(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		return errorf(1, "finding own executable: %v", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return errorf(1, "%v", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return errorf(1, "%v", err)
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	if err := cmd.Start(); err != nil {
		return errorf(1, "starting server: %v", err)
	}
	pw.Close()
	line, _ := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	code, msg, _ := strings.Cut(strings.TrimSpace(line), " ")
	if code == "" {
		return errorf(1, "server exited before the mount was ready (%v)", cmd.Wait())
	}
	if c, _ := strconv.Atoi(code); c != 0 {
		cmd.Wait()
		return errorf(c, "%s", msg)
	}
	cmd.Process.Release()
	return 0
}
