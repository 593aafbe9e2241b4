package smtp

import (
	"bufio"
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"

	"qbox/proto"
)

// FuzzReadReply feeds server bytes to the reply reader and to the
// line-at-a-time Read go-smtp sees. Replies have a code of 200-599, their
// text starts with it, holds no CR, LF or NUL and is bounded; no reply
// consumes more than its bound; Read hands out whole lines only, never
// bytes past a line end.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 ok\r\n",
		"250-a\r\n250-b\r\n250 c\r\n",
		"250\r\n550 5.1.1 <x@y>: no\r\n",
		"250-a\n250 b\n",
		"250-a\r\n550 b\r\n",
		"hello\r\n",
		"2500 x\r\n",
		"354 go\r\n250 x\x00y\r\n",
		strings.Repeat("250-x\r\n", 120),
		"250 " + strings.Repeat("y", 2100) + "\r\n",
	} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		w := &wireConn{ctx: context.Background(), rd: bytes.NewReader(data), budget: -1}
		for n := 0; n < 100; n++ {
			r, err := w.readReply()
			if err != nil {
				break
			}
			if r.code < 200 || r.code > 599 {
				t.Fatalf("code %d", r.code)
			}
			if !strings.HasPrefix(r.text, strconv.Itoa(r.code)) {
				t.Fatalf("text %q does not start with the code %d", r.text, r.code)
			}
			if strings.ContainsAny(r.text, "\r\n\x00") || len(r.text) > proto.MaxReplyText {
				t.Fatalf("text %q", r.text)
			}
		}

		// go-smtp's view: at most one line per Read.
		g := &wireConn{ctx: context.Background(), rd: bytes.NewReader(data), budget: -1}
		buf := make([]byte, int(step)%64+1)
		var got []byte
		for {
			n, err := g.Read(buf)
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 && i != n-1 {
				t.Fatalf("Read handed out bytes past a line end: %q", buf[:n])
			}
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		// Whole lines only (textproto would take a partial one for a
		// line), and all of them unless one is longer than a reply line
		// may be.
		if !bytes.HasPrefix(data, got) || len(got) > 0 && got[len(got)-1] != '\n' {
			t.Fatalf("Read gave %q of %q", got, data)
		}
		short := true
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			short = short && len(line) < maxReplyLine-1
		}
		if end := bytes.LastIndexByte(data, '\n') + 1; short && len(got) != end {
			t.Fatalf("Read gave %q of %q, want its %d bytes of whole lines", got, data, end)
		}
	})
}

// FuzzBody checks DATA's encoding: undoing CRLF and dot-stuffing gives the
// message back (with a final LF), no line before the end is ".", and the
// size MAIL announces is the size sent.
func FuzzBody(f *testing.F) {
	for _, s := range []string{"", "a", ".\n", "..\n.", "a\r\nb", "\r", "x\n.\n\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		if err := writeBody(bw, bytes.NewReader(msg), int64(len(msg))); err != nil {
			t.Fatal(err)
		}
		info, err := scanBody(bytes.NewReader(msg), int64(len(msg)))
		if err != nil {
			t.Fatal(err)
		}
		wire := out.Bytes()
		if int64(len(wire)) != info.wireSize+3 {
			t.Fatalf("scan says %d bytes, %d sent (with .CRLF)", info.wireSize, len(wire))
		}
		eightBit := false
		for _, c := range msg {
			eightBit = eightBit || c >= 0x80
		}
		if info.eightBit != eightBit {
			t.Fatalf("8-bit %v for %q", info.eightBit, msg)
		}
		lines := strings.Split(string(wire), "\r\n")
		if len(lines) < 2 || lines[len(lines)-1] != "" || lines[len(lines)-2] != "." {
			t.Fatalf("wire %q does not end with CRLF.CRLF", wire)
		}
		lines = lines[:len(lines)-2]
		for i, l := range lines {
			if l == "." {
				t.Fatalf("line %d of %q ends the data early", i, wire)
			}
			if strings.HasPrefix(l, ".") {
				lines[i] = l[1:]
			}
		}
		back := strings.Join(lines, "\n")
		if len(lines) > 0 {
			back += "\n"
		}
		want := string(msg)
		if len(msg) > 0 && msg[len(msg)-1] != '\n' {
			want += "\n"
		}
		if back != want {
			t.Fatalf("decoded %q, sent %q", back, msg)
		}
	})
}
