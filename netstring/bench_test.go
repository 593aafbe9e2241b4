package netstring

import (
	"bufio"
	"io"
	"testing"
)

// repeatReader serves the same encoded bytes over and over, so a
// benchmark reads from memory without io.Reader overhead of its own.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// BenchmarkDecode64K decodes 64 KiB netstrings into the caller's buffer.
// Target: >= 1 GB/s and 0 allocs/op.
func BenchmarkDecode64K(b *testing.B) {
	body := make([]byte, 64<<10)
	for i := range body {
		body[i] = byte(i)
	}
	enc := Append(nil, body)
	src := &repeatReader{data: enc}
	r := NewReader(bufio.NewReaderSize(src, 64<<10))
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nb, err := r.Next(1 << 20)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(nb, buf); err != nil {
			b.Fatal(err)
		}
		if err := nb.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeNested64K: the QMQP shape, a 64 KiB message inside the
// outer netstring, read through the nested reader.
func BenchmarkDecodeNested64K(b *testing.B) {
	body := make([]byte, 64<<10)
	inner := Append(nil, body)
	inner = AppendString(inner, "sender@example.com")
	inner = AppendString(inner, "rcpt@example.com")
	enc := Append(nil, inner)
	src := &repeatReader{data: enc}
	r := NewReader(bufio.NewReaderSize(src, 64<<10))
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		outer, err := r.Next(1 << 20)
		if err != nil {
			b.Fatal(err)
		}
		items := NewReader(outer)
		for {
			nb, err := items.Next(1 << 20)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(nb, buf[:nb.Size()]); err != nil {
				b.Fatal(err)
			}
			if err := nb.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEncode64K writes 64 KiB netstrings through a buffered writer,
// the body streamed from a reader as the QMQP client does.
func BenchmarkEncode64K(b *testing.B) {
	body := make([]byte, 64<<10)
	bw := bufio.NewWriterSize(io.Discard, 64<<10)
	w := NewWriter(bw)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := w.WriteBytes(body); err != nil {
			b.Fatal(err)
		}
	}
	bw.Flush()
}
