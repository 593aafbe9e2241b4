// Package netstring reads and writes D. J. Bernstein's netstrings
// (cr.yp.to/proto/netstrings.txt) as streams: a body is never buffered by
// this package, so a gigabyte message costs no more memory than a short one.
//
// The grammar is enforced strictly: a non-empty run of decimal digits with
// no leading zero (only "0:," starts with 0), a colon, exactly that many
// bytes, a comma. The caller's length limit is checked while the digits are
// read, before anything is allocated.
package netstring

import (
	"bufio"
	"errors"
	"io"
)

// ErrGrammar is the parent of every error for input that is not a
// netstring within the reader's limit: errors.Is(err, ErrGrammar) asks
// "did the peer break the grammar?" once, where the specific errors below
// say how. A length over the limit counts (the reader will not read what
// it was told it may refuse); an early end of input does not: that is a
// lost connection (ErrUnexpectedEOF), not a malformed netstring.
var ErrGrammar = errors.New("netstring: malformed")

// grammarError is a specific grammar fault; it unwraps to ErrGrammar.
type grammarError struct{ msg string }

func (e *grammarError) Error() string { return e.msg }
func (e *grammarError) Unwrap() error { return ErrGrammar }

// Errors for malformed input. Every parse error wraps exactly one of them,
// so callers can tell them apart with errors.Is; all but ErrUnexpectedEOF
// also wrap ErrGrammar.
var (
	ErrEmptyLength   error = &grammarError{"netstring: empty length"}
	ErrNonDigit      error = &grammarError{"netstring: length is not a decimal number"}
	ErrLeadingZero   error = &grammarError{"netstring: length has a leading zero"}
	ErrMissingColon  error = &grammarError{"netstring: missing ':' after length"}
	ErrMissingComma  error = &grammarError{"netstring: missing ',' after body"}
	ErrTooLong       error = &grammarError{"netstring: length exceeds limit"}
	ErrUnexpectedEOF       = errors.New("netstring: unexpected end of input")
	// ErrOverrun wraps ErrTooLong: the limit exceeded is what is left of
	// the outer netstring.
	ErrOverrun error = &overrunError{}
)

// overrunError is ErrOverrun: a plain type rather than fmt.Errorf, whose
// first call (at package initialisation) every process start paid.
type overrunError struct{}

func (*overrunError) Error() string {
	return ErrTooLong.Error() + ": inner netstring overruns the outer one"
}
func (*overrunError) Unwrap() error { return ErrTooLong }

// byteReader is what the parser needs from its source: byte-wise reads for
// the header and bulk reads for the body.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// Reader parses a sequence of netstrings from a stream.
type Reader struct {
	src  byteReader
	body Body
}

// NewReader returns a Reader over r. If r already reads bytes one at a
// time cheaply (a *bufio.Reader, or a *Body for nesting) it is used as it
// is and the Reader never reads past what it parses; otherwise r is wrapped
// in a bufio.Reader, which may read ahead.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(byteReader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{src: br, body: Body{done: true}}
}

// Next reads the header of the next netstring and returns its body, which
// reads exactly the declared length and then checks the trailing comma: the
// body's Read returns io.EOF only after the comma has been seen. A length
// greater than max fails with ErrTooLong before any body byte is read.
//
// If the previous body was not read to the end, Next discards its rest
// first. The returned *Body is reused by the following call to Next.
//
// At a clean end of input (no byte of a new header) Next returns io.EOF.
func (r *Reader) Next(max int64) (*Body, error) {
	if !r.body.done {
		if err := r.body.Discard(); err != nil {
			return nil, err
		}
	}
	n, err := ReadLength(r.src, max)
	if err != nil {
		return nil, err
	}
	// Nested in an outer body: the inner body and its comma must fit in
	// what is left of the outer one. Checked before any byte is read.
	if outer, ok := r.src.(*Body); ok && n >= outer.left {
		return nil, ErrOverrun
	}
	r.body = Body{src: r.src, left: n, size: n}
	return &r.body, nil
}

// ReadBytes reads one whole netstring of at most max bytes into a new slice.
func (r *Reader) ReadBytes(max int64) ([]byte, error) {
	return r.AppendBytes(nil, max)
}

// AppendBytes reads one whole netstring of at most max bytes and appends its
// body to dst.
func (r *Reader) AppendBytes(dst []byte, max int64) ([]byte, error) {
	b, err := r.Next(max)
	if err == io.EOF {
		return dst, ErrUnexpectedEOF
	}
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]byte, b.left)...)
	if _, err := io.ReadFull(b, dst[start:]); err != nil {
		return dst[:start], err
	}
	return dst, b.Close()
}

// ReadLength parses a netstring header ("digits:") from r and returns the
// declared length. It fails with ErrTooLong as soon as the digits read so
// far exceed max, so an endless run of digits is refused after at most
// len(max)+1 bytes. A clean end of input before the first byte is io.EOF.
func ReadLength(r io.ByteReader, max int64) (int64, error) {
	c, err := r.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		return 0, err
	}
	switch {
	case c == ':':
		return 0, ErrEmptyLength
	case c < '0' || c > '9':
		return 0, ErrNonDigit
	}
	n := int64(c - '0')
	if n > max {
		return 0, ErrTooLong
	}
	leadingZero := c == '0'
	for {
		c, err := r.ReadByte()
		if err != nil {
			return 0, eof(err)
		}
		if c == ':' {
			return n, nil
		}
		if c < '0' || c > '9' {
			return 0, ErrMissingColon
		}
		if leadingZero {
			return 0, ErrLeadingZero
		}
		// n <= max here, and max fits in int64, so checking against
		// (max - digit)/10 avoids any overflow.
		d := int64(c - '0')
		if n > (max-d)/10 {
			return 0, ErrTooLong
		}
		n = n*10 + d
	}
}

func eof(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrUnexpectedEOF
	}
	return err
}

// Body reads the body of one netstring: exactly its declared length, then
// the trailing comma. It also reads byte-wise, so a Reader can be nested
// over it (QMQP's outer netstring, QMTP's recipient list); the inner
// netstrings must then fill the body exactly.
type Body struct {
	src  byteReader
	left int64 // body bytes not yet read
	size int64
	done bool // comma checked (or an error seen)
	err  error
}

// Size returns the declared length.
func (b *Body) Size() int64 { return b.size }

// Len returns the number of body bytes not yet read.
func (b *Body) Len() int64 { return b.left }

func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		return 0, b.finish()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.src.Read(p)
	b.left -= int64(n)
	if err != nil {
		if err == io.EOF {
			if b.left == 0 {
				return n, nil
			}
			err = ErrUnexpectedEOF
		}
		b.done, b.err = true, err
		return n, err
	}
	return n, nil
}

// ReadByte implements io.ByteReader.
func (b *Body) ReadByte() (byte, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		return 0, b.finish()
	}
	c, err := b.src.ReadByte()
	if err != nil {
		err = eof(err)
		b.done, b.err = true, err
		return 0, err
	}
	b.left--
	return c, nil
}

// finish checks the comma once the body is consumed; it returns io.EOF when
// the netstring was well formed.
func (b *Body) finish() error {
	if b.done {
		if b.err != nil {
			return b.err
		}
		return io.EOF
	}
	b.done = true
	c, err := b.src.ReadByte()
	switch {
	case err != nil:
		b.err = eof(err)
	case c != ',':
		b.err = ErrMissingComma
	default:
		return io.EOF
	}
	return b.err
}

// Close requires the body to have been read completely and checks the
// comma. Use Discard to skip an unread rest instead.
func (b *Body) Close() error {
	if b.left != 0 && !b.done {
		return errors.New("netstring: body closed before it was read")
	}
	if err := b.finish(); err != io.EOF {
		return err
	}
	return nil
}

// Discard reads and drops the rest of the body, then checks the comma.
func (b *Body) Discard() error {
	// io.Discard's ReadFrom uses a pooled buffer: no allocation per call.
	_, err := io.Copy(io.Discard, b)
	return err
}
