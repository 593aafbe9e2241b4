package inject

import (
	"errors"
	"fmt"
	"io"
	"os"

	"qbox/commands/spill"
)

// DefaultSpillThreshold is how much of a message read from a pipe is held
// in memory before it goes to a temporary file.
const DefaultSpillThreshold = spill.DefaultLimit

// Source is a message input that can be read again from its start: a
// regular file as it is, or a pipe's content spooled to memory or a
// temporary file. QMQP needs the size before the first byte is sent, and
// header completion needs a second pass over the body to count it.
type Source struct {
	rs    io.ReadSeeker
	base  int64 // where the message starts in rs
	size  int64
	close func() error
}

// Size is the message's size in bytes.
func (s *Source) Size() int64 { return s.size }

// At returns a reader of the message from offset off to its end.
func (s *Source) At(off int64) (io.Reader, error) {
	if _, err := s.rs.Seek(s.base+off, io.SeekStart); err != nil {
		return nil, err
	}
	return io.LimitReader(s.rs, s.size-off), nil
}

// Close releases the temporary file, if any.
func (s *Source) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

// OpenSource makes in re-readable. A regular file (stdin redirected from a
// file) is used in place from its current offset, its size from fstat;
// anything else is read to its end, held in memory up to threshold bytes
// and spilled to an unlinked temporary file in $TMPDIR beyond that, so
// memory stays bounded whatever the size.
func OpenSource(in io.Reader, threshold int64) (*Source, error) {
	if threshold <= 0 {
		threshold = DefaultSpillThreshold
	}
	if f, ok := in.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if cur, err := f.Seek(0, io.SeekCurrent); err == nil {
				return &Source{rs: f, base: cur, size: st.Size() - cur}, nil
			}
		}
	}
	return buffer(in, threshold)
}

func buffer(in io.Reader, threshold int64) (*Source, error) {
	b := &spill.Buffer{Limit: threshold}
	if _, err := b.ReadFrom(in); err != nil {
		b.Close()
		var we *spill.WriteError
		if errors.As(err, &we) {
			return nil, err
		}
		return nil, fmt.Errorf("reading the message: %w", err)
	}
	return &Source{rs: b.Reader(), size: b.Size(), close: b.Close}, nil
}
