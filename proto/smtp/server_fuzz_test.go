package smtp

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/server"
)

// memBackend keeps what is committed.
type memBackend struct {
	mu     sync.Mutex
	stored [][]byte
	envs   []proto.Envelope
}

func (b *memBackend) Begin(context.Context, proto.Peer, int64) (proto.Delivery, error) {
	return &memDelivery{b: b}, nil
}

type memDelivery struct {
	b   *memBackend
	buf bytes.Buffer
}

func (d *memDelivery) Write(p []byte) (int, error) { return d.buf.Write(p) }
func (d *memDelivery) Abort()                      {}
func (d *memDelivery) Commit(_ context.Context, env proto.Envelope) []proto.Reply {
	d.b.mu.Lock()
	d.b.stored = append(d.b.stored, d.buf.Bytes())
	d.b.envs = append(d.b.envs, env)
	d.b.mu.Unlock()
	r := make([]proto.Reply, len(env.Recipients))
	for i := range r {
		r[i] = proto.K("ok stored")
	}
	return r
}

// scriptConn is a client that sends its script, then closes its side.
type scriptConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

var dataOK = regexp.MustCompile(`(?m)^250 2\.0\.0 ok stored\r$`)

// FuzzServerSession runs client bytes through a whole SMTP session into a
// store. Every "250 ok" after data is one committed message and every
// committed message got one: nothing stored without the client told, no
// 250 without a message (a "\n.\n" or "\r\n.\n" never ends the data
// early to smuggle a second one). A message from DATA ends with a line
// end (CRLF before the dot), every envelope address passes
// proto.CheckEnvelope, and
// replies are lines ending in CR LF with no other LF. (go-smtp echoes a
// bare CR a client put in its own EHLO or command back to it.)
//
// It found that go-smtp goes on with commands it had buffered after it
// closed the connection (too many errors, QUIT): a message stored with
// its 250 written to no one, and a BDAT that wedged the session for
// ever; see serverConn and waitData.
func FuzzServerSession(f *testing.F) {
	for _, s := range []string{
		"EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<r@x>\r\nDATA\r\nSubject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<r@x>\r\nDATA\r\nbody\n.\nMAIL FROM:<e@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nx\r\n.\r\n",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<\"a\x00b\"@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n..dot\r\n\r\n.\n.\r\n",
		"EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<r@x>\r\nBDAT 4\r\nab\r\nBDAT 3 LAST\r\nc\r\nRSET\r\n",
		"EHLO c\r\nMAIL FROM:<s@x> SIZE=99999999\r\nRCPT TO:<r@x>\r\nNOOP\r\nVRFY x\r\nDATA\r\n",
		"\n\n\n\nEHLO 0\nMAIL FROM:<>\nRCPT TO:<0@0>\nDATA\n.\r\n",
		"EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<U@x>\r\nBDAT 4\r\naBDAT \x00\x00\x00\x7fb\r\nRDAT 3 LAST\r\nc\r\nBSETb\r\nBDAT 3 LAST\r\nc\r\nRSET\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		be := &memBackend{}
		srv := &Server{Backend: be, Hostname: "mx.test", Limits: server.Limits{MaxMessageSize: 4096, MaxRecipients: 5, MaxLine: 512}}
		conn := &scriptConn{in: bytes.NewReader(script)}
		srv.ServeConn(context.Background(), conn, proto.Peer{RemoteIP: "192.0.2.1"})
		out := conn.out.String()
		if n := len(dataOK.FindAllStringIndex(out, -1)); n != len(be.stored) {
			t.Fatalf("%d data 250s, %d messages stored\n%q", n, len(be.stored), out)
		}
		for i, m := range be.stored {
			if len(m) > 0 && m[len(m)-1] == '\r' && !bytes.Contains(bytes.ToUpper(script), []byte("BDAT")) {
				t.Fatalf("DATA stored without its final line end: %q", m)
			}
			if err := proto.CheckEnvelope(be.envs[i]); err != nil || len(be.envs[i].Recipients) == 0 {
				t.Fatalf("envelope %q: %v", be.envs[i], err)
			}
		}
		for _, l := range strings.SplitAfter(out, "\r\n") {
			if l == "" {
				continue
			}
			if !strings.HasSuffix(l, "\r\n") || strings.Contains(l[:len(l)-2], "\n") {
				t.Fatalf("reply line %q", l)
			}
		}
	})
}
