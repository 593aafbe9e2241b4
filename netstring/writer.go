package netstring

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Size returns the encoded length of a netstring with an n-byte body.
func Size(n int64) int64 {
	return int64(len(strconv.AppendInt(nil, n, 10))) + 2 + n
}

// Append appends the netstring encoding of b to dst.
func Append(dst, b []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, ':')
	dst = append(dst, b...)
	return append(dst, ',')
}

// AppendString appends the netstring encoding of s to dst.
func AppendString(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	dst = append(dst, s...)
	return append(dst, ',')
}

var comma = []byte{','}

// Writer writes netstrings to w. It does no buffering of its own; give it a
// *bufio.Writer when writing many small netstrings.
type Writer struct {
	w   io.Writer
	hdr [24]byte
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteHeader writes "n:". The caller then writes exactly n bytes and calls
// WriteTrailer; nesting is done this way, with the outer length computed
// from Size of each inner item.
func (w *Writer) WriteHeader(n int64) error {
	if n < 0 {
		return errors.New("netstring: negative length")
	}
	b := strconv.AppendInt(w.hdr[:0], n, 10)
	b = append(b, ':')
	_, err := w.w.Write(b)
	return err
}

// WriteTrailer writes the closing comma.
func (w *Writer) WriteTrailer() error {
	_, err := w.w.Write(comma)
	return err
}

// Write writes raw bytes (part of a body started with WriteHeader).
func (w *Writer) Write(p []byte) (int, error) { return w.w.Write(p) }

// WriteBytes writes b as one netstring.
func (w *Writer) WriteBytes(b []byte) error {
	if err := w.WriteHeader(int64(len(b))); err != nil {
		return err
	}
	if _, err := w.w.Write(b); err != nil {
		return err
	}
	return w.WriteTrailer()
}

// WriteString writes s as one netstring.
func (w *Writer) WriteString(s string) error {
	if err := w.WriteHeader(int64(len(s))); err != nil {
		return err
	}
	if _, err := io.WriteString(w.w, s); err != nil {
		return err
	}
	return w.WriteTrailer()
}

// WriteFrom writes one netstring whose n-byte body is streamed from r. A
// reader that ends early, or has more than n bytes, is an error: the header
// already promised n, so the stream is then unusable. Bytes past n are left
// unread in r.
func (w *Writer) WriteFrom(n int64, r io.Reader) error {
	if err := w.WriteHeader(n); err != nil {
		return err
	}
	copied, err := io.Copy(w.w, io.LimitReader(r, n))
	if err != nil {
		return err
	}
	if copied != n {
		return fmt.Errorf("netstring: body ended after %d of %d bytes", copied, n)
	}
	return w.WriteTrailer()
}
