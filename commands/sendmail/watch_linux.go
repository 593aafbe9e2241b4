package sendmail

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dropWatch wakes the queue runner when a drop arrives in the system
// queue's maildrop, as postdrop wakes Postfix's pickup: a drop is taken
// at once instead of at the next interval, which is left for retries.
// It is inotify on the drop directory: sendmail writes each drop under a
// dot name and renames it (IN_MOVED_TO); a file written in place under
// its final name is seen when it is closed (IN_CLOSE_WRITE). Dot names,
// drops still being written, wake nothing.
type dropWatch struct {
	f *os.File
	// C receives when drops may have arrived; a burst of drops is one
	// wake-up (the channel holds one), taken by one pickup.
	C    <-chan struct{}
	done chan struct{}
}

// watchDrops starts watching dir.
func watchDrops(dir string) (*dropWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	// Non-blocking, the descriptor goes to Go's poller: Close ends a
	// Read under way.
	f := os.NewFile(uintptr(fd), "inotify:"+dir)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW); err != nil {
		f.Close()
		return nil, fmt.Errorf("inotify: watching %s: %w", dir, err)
	}
	c := make(chan struct{}, 1)
	w := &dropWatch{f: f, C: c, done: make(chan struct{})}
	go w.read(c)
	return w, nil
}

// read turns inotify events into wake-ups until Close (or until the
// directory goes away: the runner then falls back to its interval).
func (w *dropWatch) read(c chan<- struct{}) {
	defer close(w.done)
	buf := make([]byte, 64<<10) // many events per read; one is at most 16 + NAME_MAX + 1 bytes
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return // closed, or the watch is gone
		}
		if wakes(buf[:n]) {
			select {
			case c <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
	}
}

// wakes reports whether a read of inotify events holds a drop's arrival
// (or an overflow of the event queue, which may hide one).
func wakes(b []byte) bool {
	for len(b) >= unix.SizeofInotifyEvent {
		// struct inotify_event: wd, mask, cookie, len, then the name.
		mask := binary.NativeEndian.Uint32(b[4:])
		end := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:]))
		if end > len(b) || end < unix.SizeofInotifyEvent {
			return true // cut short: let the pickup look
		}
		name := b[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		switch {
		case mask&unix.IN_Q_OVERFLOW != 0:
			return true
		case mask&(unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE) != 0 && len(name) > 0 && name[0] != '.':
			return true
		}
		b = b[end:]
	}
	return false
}

// Close stops the watch.
func (w *dropWatch) Close() {
	w.f.Close()
	<-w.done
}
