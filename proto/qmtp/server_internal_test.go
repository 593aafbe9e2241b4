package qmtp

import (
	"bytes"
	"testing"

	"qbox/proto/server"
)

// FuzzServerCRLFToLF checks the streaming CR LF → LF conversion against
// the whole-buffer one, with the input split at arbitrary points.
func FuzzServerCRLFToLF(f *testing.F) {
	f.Add([]byte("a\r\nb\r\n"), uint8(1), uint8(3))
	f.Add([]byte("\r\r\n\r"), uint8(1), uint8(1))
	f.Add([]byte("lone\rCR\r"), uint8(5), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, step1, step2 uint8) {
		var out []byte
		var chunk []byte
		cr := false
		steps := []int{int(step1)%8 + 1, int(step2)%8 + 1}
		for i, rest := 0, in; len(rest) > 0; i++ {
			n := min(steps[i%2], len(rest))
			chunk, cr = server.AppendCRLFToLF(chunk[:0], rest[:n], cr)
			out = append(out, chunk...)
			rest = rest[n:]
		}
		if cr {
			out = append(out, '\r')
		}
		if want := bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n")); !bytes.Equal(out, want) {
			t.Fatalf("%q: got %q, want %q", in, out, want)
		}
	})
}
