package netstring

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	for _, s := range []string{"", "0:,", "12:hello world!,", "1:a,1:b,", "12:1:a,2:bc,0:,,", ":,", "00:,",
		"01:a,", "1:ab", "1:a", "999999999999999999999:", "5:3:abcd,", "a:,", "1 :a,"} {
		f.Add([]byte(s))
	}
}

// FuzzReader: arbitrary input never panics, every body respects the limit,
// and what was accepted re-encodes to exactly the bytes consumed.
func FuzzReader(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 64
		r := NewReader(bytes.NewReader(in))
		var reenc []byte
		for {
			b, err := r.Next(max)
			if err == io.EOF {
				if !bytes.Equal(reenc, in) {
					t.Fatalf("accepted %q but re-encoded %q", in, reenc)
				}
				return
			}
			if err != nil {
				if !isParseError(err) {
					t.Fatalf("unexpected error type: %v", err)
				}
				if !bytes.HasPrefix(in, reenc) {
					t.Fatalf("accepted prefix %q of %q", reenc, in)
				}
				return
			}
			if b.Size() > max {
				t.Fatalf("body of %d bytes over the limit %d", b.Size(), max)
			}
			body, err := io.ReadAll(b)
			if err != nil {
				if !isParseError(err) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			reenc = Append(reenc, body)
			// Try the body as a nested list too.
			nested := NewReader(bytes.NewReader(body))
			for i := 0; i < 100; i++ {
				ib, err := nested.Next(max)
				if err != nil {
					break
				}
				io.Copy(io.Discard, ib)
			}
		}
	})
}

// FuzzNested: a Reader over a Body never reads past the outer netstring,
// whatever the inner bytes.
func FuzzNested(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, inner []byte) {
		in := append(Append(nil, inner), "TRAILER"...)
		src := bytes.NewReader(in)
		r := NewReader(src)
		outer, err := r.Next(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		items := NewReader(outer)
		total := int64(0)
		for {
			b, err := items.Next(1 << 20)
			if err != nil {
				if err != io.EOF && !isParseError(err) {
					t.Fatalf("unexpected error: %v", err)
				}
				if err == io.EOF && total > int64(len(inner)) {
					t.Fatalf("inner items of %d bytes in an outer of %d", total, len(inner))
				}
				break
			}
			n, err := io.Copy(io.Discard, b)
			if err != nil {
				if !isParseError(err) {
					t.Fatalf("unexpected error: %v", err)
				}
				break
			}
			total += Size(n)
		}
		// Whatever happened inside, the outer stream is where the outer
		// netstring put it: the trailer is intact once the outer is
		// discarded.
		if err := outer.Discard(); err != nil && !isParseError(err) {
			t.Fatal(err)
		}
	})
}

// FuzzRoundTrip: any byte string survives encoding and decoding, through
// both the streaming Writer and Append.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(""), []byte("x"))
	f.Add([]byte("hello world!"), []byte("0:,"))
	f.Add([]byte{0, 255, ','}, []byte(":"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		if err := w.WriteBytes(a); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrom(int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), Append(Append(nil, a), b)) {
			t.Fatal("Writer and Append disagree")
		}
		if int64(buf.Len()) != Size(int64(len(a)))+Size(int64(len(b))) {
			t.Fatal("Size disagrees with the encoding")
		}
		r := NewReader(&buf)
		ga, err := r.ReadBytes(int64(len(a)))
		if err != nil || !bytes.Equal(ga, a) {
			t.Fatalf("first: %q %v", ga, err)
		}
		gb, err := r.AppendBytes([]byte("pre"), int64(len(b)))
		if err != nil || !bytes.Equal(gb, append([]byte("pre"), b...)) {
			t.Fatalf("second: %q %v", gb, err)
		}
		if _, err := r.Next(0); err != io.EOF {
			t.Fatalf("after both: %v", err)
		}
	})
}

// FuzzLimit: AppendBytes with a small limit never returns (or allocates
// for) more than the limit, whatever length the input declares.
func FuzzLimit(f *testing.F) {
	f.Add(uint64(999999999), []byte("xyz"), uint8(4))
	f.Add(uint64(3), []byte("abc,"), uint8(3))
	f.Add(uint64(1<<62), []byte(""), uint8(0))
	f.Fuzz(func(t *testing.T, declared uint64, rest []byte, max uint8) {
		in := append([]byte(strconv.FormatUint(declared, 10)+":"), rest...)
		got, err := NewReader(bytes.NewReader(in)).AppendBytes(nil, int64(max))
		if declared > uint64(max) && !errors.Is(err, ErrTooLong) {
			t.Fatalf("declared %d over max %d: err %v", declared, max, err)
		}
		if len(got) > int(max) || cap(got) > 2*int(max)+16 {
			t.Fatalf("len %d cap %d for max %d", len(got), cap(got), max)
		}
	})
}

func isParseError(err error) bool {
	return errors.Is(err, ErrGrammar) || errors.Is(err, ErrUnexpectedEOF)
}
