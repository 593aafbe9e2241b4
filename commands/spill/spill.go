// Package spill holds a message of any size in bounded memory: in memory
// while small, then in an unlinked temporary file. inject and sendmail read
// messages from pipes that cannot be read twice, while QMQP needs the size
// before the first byte and the spool needs a copy per recipient.
package spill

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// DefaultLimit is how many bytes are held in memory before the rest goes
// to a temporary file.
const DefaultLimit = 2 << 20

// Buffer is written once, then read any number of times through ReadAt.
// The zero value holds DefaultLimit bytes in memory.
type Buffer struct {
	Limit int64 // bytes held in memory; 0 means DefaultLimit
	mem   []byte
	file  *os.File
	size  int64
}

// WriteError is a failure to write the temporary file (a full $TMPDIR), as
// opposed to a failure of whatever the message was read from.
type WriteError struct{ Err error }

func (e *WriteError) Error() string {
	return fmt.Sprintf("spilling the message to %s: %v", os.TempDir(), e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

func (b *Buffer) limit() int64 {
	if b.Limit > 0 {
		return b.Limit
	}
	return DefaultLimit
}

func (b *Buffer) Write(p []byte) (int, error) {
	if b.file == nil && int64(len(b.mem)+len(p)) <= b.limit() {
		b.mem = append(b.mem, p...)
		b.size += int64(len(p))
		return len(p), nil
	}
	if b.file == nil {
		f, err := os.CreateTemp("", "qbox-")
		if err != nil {
			return 0, &WriteError{err}
		}
		// Unlinked at once: nothing is left behind however qbox ends,
		// and the 0600 file is never visible to others by name.
		os.Remove(f.Name())
		if _, err := f.Write(b.mem); err != nil {
			f.Close()
			return 0, &WriteError{err}
		}
		b.file, b.mem = f, nil
	}
	n, err := b.file.Write(p)
	b.size += int64(n)
	if err != nil {
		return n, &WriteError{err}
	}
	return n, nil
}

// ReadFrom reads r to its end; read errors are returned as they are,
// write errors as *WriteError.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	chunk := make([]byte, 64<<10)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			if _, werr := b.Write(chunk[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (b *Buffer) ReadAt(p []byte, off int64) (int, error) {
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
func (b *Buffer) Size() int64 { return b.size }

// Reader returns a fresh reader (and seeker) of the whole content.
func (b *Buffer) Reader() *io.SectionReader { return io.NewSectionReader(b, 0, b.size) }

// Close releases the temporary file.
func (b *Buffer) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file = nil
	return err
}
