package netstring

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll parses every netstring in s with the given limit and returns
// their bodies, or the first error.
func readAll(s string, max int64) ([]string, error) {
	r := NewReader(strings.NewReader(s))
	var out []string
	for {
		b, err := r.Next(max)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		body, err := io.ReadAll(b)
		if err != nil {
			return out, err
		}
		out = append(out, string(body))
	}
}

func TestWellFormed(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"0:,", []string{""}},
		{"12:hello world!,", []string{"hello world!"}},
		{"1:a,1:b,0:,", []string{"a", "b", ""}},
		{"3:\x00\xff,,", []string{"\x00\xff,"}},
		{"10:0123456789,", []string{"0123456789"}},
	}
	for _, tc := range cases {
		got, err := readAll(tc.in, 100)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Every malformed form, each with the error it must give.
func TestMalformed(t *testing.T) {
	cases := []struct {
		in   string
		max  int64
		want error
	}{
		{":,", 100, ErrEmptyLength},
		{":", 100, ErrEmptyLength},
		{"a:,", 100, ErrNonDigit},
		{"+1:a,", 100, ErrNonDigit},
		{"-1:a,", 100, ErrNonDigit},
		{" 1:a,", 100, ErrNonDigit},
		{"1a:a,", 100, ErrMissingColon},
		{"1 :a,", 100, ErrMissingColon},
		{"00:,", 100, ErrLeadingZero},
		{"01:a,", 100, ErrLeadingZero},
		{"007:abcdefg,", 100, ErrLeadingZero},
		{"0;,", 100, ErrMissingColon},
		{"1,a", 100, ErrMissingColon},
		{"1:a", 100, ErrUnexpectedEOF}, // EOF where the comma goes
		{"1:ab", 100, ErrMissingComma}, // a byte that is not the comma
		{"1:a;", 100, ErrMissingComma},
		{"0:;", 100, ErrMissingComma},
		{"0:", 100, ErrUnexpectedEOF},
		{"1", 100, ErrUnexpectedEOF}, // EOF in the length
		{"12", 100, ErrUnexpectedEOF},
		{"5:", 100, ErrUnexpectedEOF},    // EOF at the body's start
		{"5:ab", 100, ErrUnexpectedEOF},  // EOF inside the body
		{"1:a,1", 100, ErrUnexpectedEOF}, // EOF in a second header
		{"101:", 100, ErrTooLong},
		{"2:ab,", 1, ErrTooLong},
		{"1:a,", 0, ErrTooLong},
		{"9999999999999999999999999999:", 1 << 62, ErrTooLong}, // overflows int64
		{"99999999999999999999:", 1<<63 - 1, ErrTooLong},
	}
	for _, tc := range cases {
		_, err := readAll(tc.in, tc.max)
		if !errors.Is(err, tc.want) {
			t.Errorf("%q (max %d): err = %v, want %v", tc.in, tc.max, err, tc.want)
		}
		// One question for "the peer broke the grammar": every fault
		// but an early end of input answers it.
		if errors.Is(err, ErrGrammar) != (tc.want != ErrUnexpectedEOF) {
			t.Errorf("%q (max %d): err = %v; errors.Is(err, ErrGrammar) = %v", tc.in, tc.max, err, errors.Is(err, ErrGrammar))
		}
		// The same through AppendBytes.
		_, err = NewReader(strings.NewReader(tc.in)).AppendBytes(nil, tc.max)
		if !errors.Is(err, tc.want) && !(tc.in == "1:a,1" && err == nil) {
			t.Errorf("AppendBytes(%q, max %d): err = %v, want %v", tc.in, tc.max, err, tc.want)
		}
	}
	// AppendBytes at a clean end of input: a netstring was expected.
	if _, err := NewReader(strings.NewReader("")).ReadBytes(10); !errors.Is(err, ErrUnexpectedEOF) {
		t.Errorf("ReadBytes on empty input: %v", err)
	}
}

// The limit is enforced while the digits are read: a length over the
// limit is refused after at most a few more digits than the limit has,
// and an endless run of digits never makes the reader read on.
func TestLimitBeforeAllocation(t *testing.T) {
	endless := io.MultiReader(strings.NewReader("1"), infiniteDigits{})
	cr := &countingReader{r: endless}
	_, err := ReadLength(bufio.NewReaderSize(cr, 16), 1000)
	if !errors.Is(err, ErrTooLong) {
		t.Fatalf("endless digits: err = %v", err)
	}
	if cr.n > 64 {
		t.Fatalf("read %d bytes of an endless length before refusing it", cr.n)
	}
	// Precisely: max 1000 admits "1000" and refuses "1001" after its last
	// digit, and "10000" at its fifth digit.
	for in, ok := range map[string]bool{"1000:": true, "1001:": false, "999:": true, "10000:": false} {
		_, err := ReadLength(strings.NewReader(in), 1000)
		if (err == nil) != ok {
			t.Errorf("ReadLength(%q, 1000) = %v", in, err)
		}
	}
	// AppendBytes with a small limit on a huge declared length allocates
	// nothing of that size.
	in := "999999999:" + strings.Repeat("x", 100)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 100; i++ {
		if _, err := NewReader(strings.NewReader(in)).AppendBytes(nil, 16); !errors.Is(err, ErrTooLong) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 100*(64<<10+4096) {
		t.Fatalf("100 refused reads allocated %d bytes", grew)
	}
}

type infiniteDigits struct{}

func (infiniteDigits) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '9'
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestNesting(t *testing.T) {
	read := func(s string) ([]string, error) {
		r := NewReader(strings.NewReader(s))
		outer, err := r.Next(1000)
		if err != nil {
			return nil, err
		}
		inner := NewReader(outer)
		var out []string
		for {
			b, err := inner.Next(1000)
			if err == io.EOF {
				break
			}
			if err != nil {
				return out, err
			}
			body, err := io.ReadAll(b)
			if err != nil {
				return out, err
			}
			out = append(out, string(body))
		}
		// The outer netstring is complete: the next read is a clean EOF.
		if _, err := r.Next(1000); err != io.EOF {
			return out, errors.New("input continues after the outer netstring")
		}
		return out, nil
	}
	got, err := read("12:1:a,2:bc,0:,,")
	if err != nil || strings.Join(got, "|") != "a|bc|" {
		t.Fatalf("nested: %q, %v", got, err)
	}
	if got, err := read("0:,"); err != nil || len(got) != 0 {
		t.Fatalf("empty outer: %q, %v", got, err)
	}
	// QMQP's example.
	got, err = read("62:16:A simple message,18:sender@example.com,16:rcpt@example.com,,")
	if err != nil || len(got) != 3 || got[0] != "A simple message" {
		t.Fatalf("QMQP example: %q, %v", got, err)
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"5:3:abcd,", ErrOverrun},        // inner body past the outer end
		{"5:3:abc,,", ErrOverrun},        // inner comma past the outer end
		{"5:1:a,1,", ErrUnexpectedEOF},   // outer ends inside an inner header
		{"6:1:a,12,", ErrUnexpectedEOF},  // a partial inner header fills the outer
		{"3:1:a,x", ErrOverrun},          // the inner item does not fit
		{"7:1:a,1:b,", ErrOverrun},       // no room for the inner comma
		{"4:1:a,x", ErrMissingComma},     // outer comma missing right after the inner items
		{"8:1:a,1:b,", ErrUnexpectedEOF}, // the outer comma never comes
		{"6:1:a,b:,", ErrNonDigit},       // inner grammar errors come through
	} {
		_, err := read(tc.in)
		if !errors.Is(err, tc.want) {
			t.Errorf("%q: err = %v, want %v", tc.in, err, tc.want)
		}
	}
	if !errors.Is(ErrOverrun, ErrTooLong) {
		t.Error("ErrOverrun must also be ErrTooLong")
	}
}

func TestBodyBehaviour(t *testing.T) {
	r := NewReader(strings.NewReader("5:hello,3:abc,"))
	b, err := r.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != 5 || b.Len() != 5 {
		t.Fatalf("Size %d Len %d", b.Size(), b.Len())
	}
	buf := make([]byte, 2)
	if n, _ := b.Read(buf); n != 2 || b.Len() != 3 {
		t.Fatalf("after reading 2: n %d Len %d", n, b.Len())
	}
	if err := b.Close(); err == nil {
		t.Fatal("Close before the body was read: no error")
	}
	// Next discards the unread rest and checks its comma.
	b, err = r.Next(10)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(b)
	if string(body) != "abc" {
		t.Fatalf("second body %q", body)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// An error sticks.
	r = NewReader(strings.NewReader("3:abcX1:z,"))
	b, _ = r.Next(10)
	if _, err := io.ReadAll(b); !errors.Is(err, ErrMissingComma) {
		t.Fatalf("err %v", err)
	}
	if _, err := b.Read(buf); !errors.Is(err, ErrMissingComma) {
		t.Fatalf("error did not stick: %v", err)
	}
	if _, err := b.ReadByte(); !errors.Is(err, ErrMissingComma) {
		t.Fatalf("error did not stick for ReadByte: %v", err)
	}
	// Read errors of the source come through unchanged.
	boom := errors.New("boom")
	r = NewReader(bufio.NewReader(io.MultiReader(strings.NewReader("5:ab"), iotest.ErrReader(boom))))
	b, _ = r.Next(10)
	if _, err := io.ReadAll(b); !errors.Is(err, boom) {
		t.Fatalf("source error: %v", err)
	}
}

// A Reader over a *bufio.Reader reads nothing past what it parsed, so the
// caller can go on using the bufio.Reader (QMQP's reply, then nothing).
func TestNoReadAhead(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("2:ok,rest"))
	b, err := NewReader(br).ReadBytes(10)
	if err != nil || string(b) != "ok" {
		t.Fatal(b, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "rest" {
		t.Fatalf("rest %q", rest)
	}
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.WriteString("hello world!"))
	must(w.WriteBytes(nil))
	must(w.WriteFrom(3, strings.NewReader("abcdef"))) // bytes past n stay unread
	// Nesting: header from Size of the inner items.
	must(w.WriteHeader(Size(1) + Size(2)))
	must(w.WriteString("a"))
	must(w.WriteString("bc"))
	must(w.WriteTrailer())
	want := "12:hello world!,0:,3:abc,9:1:a,2:bc,,"
	if buf.String() != want {
		t.Fatalf("wrote %q, want %q", buf.String(), want)
	}
	if got := string(Append([]byte("x"), []byte("yz"))); got != "x2:yz," {
		t.Fatalf("Append: %q", got)
	}
	if got := string(AppendString(nil, "")); got != "0:," {
		t.Fatalf("AppendString: %q", got)
	}
	for n, want := range map[int64]int64{0: 3, 9: 12, 10: 14, 999: 1004, 1000: 1006} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %d, want %d", n, got, want)
		}
	}
	// A short body is an error: the header already promised more.
	if err := NewWriter(io.Discard).WriteFrom(5, strings.NewReader("abc")); err == nil {
		t.Fatal("short body: no error")
	}
	if err := NewWriter(io.Discard).WriteHeader(-1); err == nil {
		t.Fatal("negative length: no error")
	}
	// Write errors come through.
	boom := errors.New("boom")
	if err := NewWriter(failWriter{boom}).WriteString("x"); !errors.Is(err, boom) {
		t.Fatalf("write error: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

// WriteFrom never copies a large body into memory of its own: streaming
// 64 MiB allocates far less than that.
func TestWriteFromStreams(t *testing.T) {
	const n = 64 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := NewWriter(io.Discard).WriteFrom(n, io.LimitReader(infiniteDigits{}, n)); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("streaming %d bytes allocated %d", n, grew)
	}
}
