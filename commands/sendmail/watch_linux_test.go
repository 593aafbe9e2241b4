package sendmail

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// event is one inotify event as the kernel writes it: wd, mask, cookie,
// len, then the name padded with NULs.
func event(mask uint32, name string) []byte {
	padded := make([]byte, (len(name)+1+15)/16*16)
	if name == "" {
		padded = nil
	}
	copy(padded, name)
	b := make([]byte, unix.SizeofInotifyEvent, unix.SizeofInotifyEvent+len(padded))
	binary.NativeEndian.PutUint32(b[0:], 1)
	binary.NativeEndian.PutUint32(b[4:], mask)
	binary.NativeEndian.PutUint32(b[12:], uint32(len(padded)))
	return append(b, padded...)
}

// TestWakes: a drop renamed into place or closed under its final name
// wakes the runner; a drop still being written (a dot name) does not; an
// overflow of the event queue does.
func TestWakes(t *testing.T) {
	for _, c := range []struct {
		what string
		b    []byte
		want bool
	}{
		{"renamed into place", event(unix.IN_MOVED_TO, "0123abcd"), true},
		{"written in place", event(unix.IN_CLOSE_WRITE, "0123abcd"), true},
		{"being written", event(unix.IN_CLOSE_WRITE, ".0123abcd"), false},
		{"a dot file, then a drop", append(event(unix.IN_CLOSE_WRITE, ".x"), event(unix.IN_MOVED_TO, "y")...), true},
		{"overflow", event(unix.IN_Q_OVERFLOW, ""), true},
		{"nothing", nil, false},
		{"the watch removed", event(unix.IN_IGNORED, ""), false},
	} {
		if got := wakes(c.b); got != c.want {
			t.Errorf("%s: wakes %v, want %v", c.what, got, c.want)
		}
	}
}

func FuzzWakes(f *testing.F) {
	f.Add(event(unix.IN_MOVED_TO, "0123abcd"))
	f.Add(append(event(unix.IN_CLOSE_WRITE, ".x"), event(unix.IN_MOVED_TO, "y")...))
	f.Fuzz(func(t *testing.T, b []byte) {
		wakes(b) // never panics, whatever the bytes
	})
}
