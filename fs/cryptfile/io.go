package cryptfile

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// preadAll reads into buf from off until buf is full or the file ends,
// and returns how many bytes it read.
func preadAll(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := syscall.Pread(fd, buf[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// preadFull fills buf from off; a file that ends first is an error.
func preadFull(fd int, buf []byte, off int64) error {
	n, err := preadAll(fd, buf, off)
	if err == nil && n < len(buf) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// pwriteFull writes all of buf at off.
func pwriteFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		m, err := syscall.Pwrite(fd, buf, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		buf = buf[m:]
		off += int64(m)
	}
	return nil
}

// PreadHead reads the start of the backing file fd into buf and returns
// how many bytes it read (fewer only at the end of the file). Reading
// the header is not an access by the user: atime stays as it is
// (O_NOATIME needs ownership or CAP_FOWNER; without it atime moves).
func PreadHead(fd int, buf []byte) (int, error) {
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	_, e := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NOATIME)
	n, err := preadAll(fd, buf, 0)
	if e == nil {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	}
	return n, err
}
