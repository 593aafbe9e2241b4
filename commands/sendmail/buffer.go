package sendmail

import (
	"errors"
	"io"
	"os"
)

// memoryLimit is how much of a message is held in memory before the rest
// goes to an unlinked temporary file, so a message of any size costs the
// same memory.
const memoryLimit = 1 << 20

// spillBuffer holds one message: in memory while small, then in an
// anonymous temporary file. It is written once, then read (possibly
// several times, once per spooled recipient) through ReadAt.
type spillBuffer struct {
	mem  []byte
	file *os.File
	size int64
}

func (b *spillBuffer) Write(p []byte) (int, error) {
	if b.file == nil && len(b.mem)+len(p) <= memoryLimit {
		b.mem = append(b.mem, p...)
		b.size += int64(len(p))
		return len(p), nil
	}
	if b.file == nil {
		f, err := os.CreateTemp("", "qbox-sendmail-")
		if err != nil {
			return 0, err
		}
		// Unlinked at once: nothing is left behind however we exit,
		// and the 0600 file is never visible to others by name.
		os.Remove(f.Name())
		if _, err := f.Write(b.mem); err != nil {
			f.Close()
			return 0, err
		}
		b.file, b.mem = f, nil
	}
	n, err := b.file.Write(p)
	b.size += int64(n)
	return n, err
}

func (b *spillBuffer) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.size {
		return 0, io.EOF
	}
	if b.file != nil {
		return b.file.ReadAt(p, off)
	}
	n := copy(p, b.mem[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size is the number of bytes written.
func (b *spillBuffer) Size() int64 { return b.size }

// Reader returns a fresh reader of the whole content.
func (b *spillBuffer) Reader() io.Reader { return io.NewSectionReader(b, 0, b.size) }

// Close releases the temporary file.
func (b *spillBuffer) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file = nil
	return err
}

var errTooLarge = errors.New("message too large")

// limitedWriter fails with errTooLarge once more than max bytes are
// written (max <= 0: no limit).
type limitedWriter struct {
	w   io.Writer
	max int64
	n   int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.max > 0 && l.n+int64(len(p)) > l.max {
		return 0, errTooLarge
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}
