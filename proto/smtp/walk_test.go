package smtp

// The offset walk (issue 20): a scripted server answers after the client
// has handed over exactly n bytes of the transaction (MAIL, RCPT, DATA,
// the message and its "."), for every n. A reply counts only when n is
// the end of what it answers; anywhere else it was on the socket before
// the last byte of what it answers was handed over, and the session ends
// with nothing believed: the recipient stays Z.
//
// The client is stopped (testPause) once n bytes are handed over, until
// the server's reply has reached its socket, so which side came first is
// decided by events, never by scheduling.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto"
)

// walkReplies are the replies the server sends at n: the positive one
// ("ok": 250, 354 to DATA), a 4xx, a 5xx and garbage.
var walkReplies = []string{"ok", "4xx", "5xx", "garbage"}

type walkUnit struct {
	kind string // MAIL, RCPT, DATA, "."
	end  int    // offset in the transaction just past its final LF
}

type walkCase struct {
	n     int
	reply string
	units []walkUnit
	sent  chan int64  // the server's stream offset just past the reply at n
	got   chan []byte // what the server read of the transaction
}

// rawCount counts the bytes written on the socket.
type rawCount struct {
	net.Conn
	n int64
}

func (c *rawCount) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *walkCase) unitAt(pos int) int {
	for i, u := range c.units {
		if pos <= u.end {
			return i
		}
	}
	return len(c.units) - 1
}

func walkReplyText(kind, r string) string {
	switch r {
	case "4xx":
		return "451 4.3.0 try again later\r\n"
	case "5xx":
		return "554 5.7.1 refused\r\n"
	case "garbage":
		return "hello there\r\n"
	}
	if kind == "DATA" {
		return "354 go on\r\n"
	}
	return "250 2.0.0 ok\r\n"
}

// serveWalk is one session of the walk's server.
// With cfg, the transaction runs inside TLS (STARTTLS first), and what the
// server reports sent is counted on the socket, records and all.
// The case is the one the client names in its EHLO (lookup).
func serveWalk(p *peer, lookup func(ehlo string) *walkCase, pipelining bool, cfg *tls.Config) {
	rc := &rawCount{Conn: p.c}
	p.c = rc
	send := func(s string) bool { return p.send(s) == nil }
	if !send("220 walk ESMTP\r\n") {
		return
	}
	l, err := p.line()
	if err != nil || !strings.HasPrefix(l, "EHLO ") {
		return
	}
	c := lookup(strings.TrimPrefix(l, "EHLO "))
	if c == nil {
		return
	}
	var tx []byte
	defer func() { c.got <- tx }()
	ext := "250-walk\r\n250 ENHANCEDSTATUSCODES\r\n"
	if pipelining {
		ext = "250-walk\r\n250 PIPELINING\r\n"
	}
	if cfg != nil {
		if !send("250-walk\r\n250 STARTTLS\r\n") {
			return
		}
		if l, err := p.line(); err != nil || l != "STARTTLS" || !send("220 go ahead\r\n") {
			return
		}
		tc := tls.Server(rc, cfg)
		if tc.Handshake() != nil {
			return
		}
		p.c, p.br = tc, bufio.NewReader(tc)
		if l, err := p.line(); err != nil || !strings.HasPrefix(l, "EHLO ") {
			return
		}
	}
	if !send(ext) {
		return
	}
	replied := make([]bool, len(c.units))
	inject := func() bool {
		u := c.unitAt(len(tx))
		replied[u] = true
		ok := send(walkReplyText(c.units[u].kind, c.reply))
		c.sent <- rc.n
		return ok
	}
	if c.n == 0 && !inject() {
		return
	}
	var line []byte
	inData := false
	unit := 0
	for {
		b, err := p.br.ReadByte()
		if err != nil {
			return
		}
		tx = append(tx, b)
		line = append(line, b)
		pos := len(tx)
		if pos == c.n && !inject() {
			return
		}
		if b != '\n' {
			continue
		}
		l := string(line)
		line = line[:0]
		if inData && l != ".\r\n" {
			continue
		}
		u := unit
		unit++
		if u < len(replied) && replied[u] {
			inData = !inData && l == "DATA\r\n" && c.reply == "ok"
			continue
		}
		var r string
		switch {
		case inData:
			r, inData = "250 2.0.0 queued\r\n", false
		case l == "DATA\r\n":
			r, inData = "354 go on\r\n", true
		case l == "QUIT\r\n":
			send("221 bye\r\n")
			return
		default:
			r = "250 2.0.0 ok\r\n"
		}
		if !send(r) {
			return
		}
	}
}

// walkTransaction is what the client writes for one message from s to r
// with body, and the ends of its units.
func walkTransaction(body string) (string, []walkUnit) {
	parts := []struct{ kind, text string }{
		{"MAIL", "MAIL FROM:<s@example.test>\r\n"},
		{"RCPT", "RCPT TO:<r@example.test>\r\n"},
		{"DATA", "DATA\r\n"},
		{".", strings.ReplaceAll(body, "\n", "\r\n") + ".\r\n"},
	}
	var tx string
	var units []walkUnit
	for _, p := range parts {
		tx += p.text
		units = append(units, walkUnit{kind: p.kind, end: len(tx)})
	}
	return tx, units
}

func TestOffsetWalk(t *testing.T) {
	if !proto.MarkArrivals(dialSelf(t)).Known {
		t.Skip("no kernel count of received bytes here: the walk needs it")
	}
	var b strings.Builder
	for b.Len() < 2048 {
		fmt.Fprintf(&b, "line %04d of a two kilobyte body, no dot at its start\n", b.Len())
	}
	bodies := map[string]string{"1-byte": "x", "2KB": b.String()}
	cert, _ := selfSigned(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, name := range []string{"1-byte", "2KB", "1-byte/TLS"} {
		for _, pipelining := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pipelining=%v", name, pipelining), func(t *testing.T) {
				t.Parallel()
				if body, ok := strings.CutSuffix(name, "/TLS"); ok {
					walk(t, bodies[body], pipelining, cfg)
					return
				}
				walk(t, bodies[name], pipelining, nil)
			})
		}
	}
}

func dialSelf(t *testing.T) net.Conn {
	t.Helper()
	addr := startServer(t, func(p *peer) { p.line() })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func walk(t *testing.T, body string, pipelining bool, cfg *tls.Config) {
	tx, units := walkTransaction(body)
	if !strings.HasSuffix(body, "\n") {
		// The client ends a message without a final LF with one.
		tx, units = walkTransaction(body + "\n")
	}
	ends := map[int]string{}
	for _, u := range units {
		ends[u.end] = u.kind
	}
	type job struct {
		n     int
		reply string
	}
	var jobs []job
	for n := 0; n <= len(tx); n++ {
		replies := walkReplies
		if _, end := ends[n]; !end && len(tx) > 200 && n > units[2].end {
			// Inside a long message every offset is walked with one
			// reply each, in turn; all four at each end.
			replies = walkReplies[n%len(walkReplies) : n%len(walkReplies)+1]
		}
		for _, r := range replies {
			jobs = append(jobs, job{n, r})
		}
	}
	cases := make([]*walkCase, len(jobs))
	for i, j := range jobs {
		cases[i] = &walkCase{n: j.n, reply: j.reply, units: units, sent: make(chan int64, 1), got: make(chan []byte, 1)}
	}
	addr := startServer(t, func(p *peer) {
		serveWalk(p, func(ehlo string) *walkCase {
			var i int
			if _, err := fmt.Sscanf(ehlo, "walk-%d.example", &i); err != nil || i < 0 || i >= len(cases) {
				return nil
			}
			return cases[i]
		}, pipelining, cfg)
	})
	msg := bytesMessage("s@example.test", []byte(body), "r@example.test")
	mode := TLSNone
	if cfg != nil {
		mode = TLSOpportunistic
	}
	// Sessions run a few at a time: each is decided by its own events.
	next := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				walkOne(t, addr, mode, msg, cases[i], i, tx, ends)
			}
		}()
	}
	for i := range jobs {
		if t.Failed() {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	checked := len(jobs)
	t.Logf("%d sessions over %d offsets", checked, len(tx)+1)
}

// walkOne runs case c (number i) and checks its outcome.
func walkOne(t *testing.T, addr string, mode TLSMode, msg proto.Message, c *walkCase, i int, tx string, ends map[int]string) {
	n, r := c.n, c.reply
	client := &Client{TLS: mode, Helo: fmt.Sprintf("walk-%d.example", i), CommandTimeout: time.Minute, DataTimeout: time.Minute,
		testPause: &pauseHook{at: int64(n), base: -1, wait: func(conn net.Conn) {
			var want int64
			select {
			case want = <-c.sent:
			case <-time.After(time.Minute): // a guard
				t.Errorf("n=%d: the server never answered", n)
				return
			}
			// The reply has been written; wait (an event, not a
			// time) until the socket has counted it.
			guard := time.Now().Add(time.Minute)
			for proto.MarkArrivals(conn).Offset < want && time.Now().Before(guard) {
				runtime.Gosched()
			}
		}}}
	var results []proto.Result
	_, err := client.Deliver(context.Background(), []string{addr}, []proto.Message{msg}, collect(&results))
	got := <-c.got
	// Up to n the client writes the transaction; after a refusal it
	// goes its own way (RSET, QUIT, an empty DATA).
	if m := min(len(got), n); string(got[:m]) != tx[:m] {
		t.Errorf("n=%d, reply %s: the client wrote %q, want a prefix of %q; results %+v, err %v", n, r, got, tx, results, err)
		return
	}
	kind, onTime := ends[n]
	if n == 0 {
		onTime = false
	}
	want, fromServer, wantErr := "Z", false, proto.ErrRemoteViolation
	if onTime {
		switch r {
		case "ok":
			want, fromServer, wantErr = "K", true, nil
		case "4xx":
			want, fromServer, wantErr = "Z", true, nil
		case "5xx":
			want, fromServer, wantErr = "D", true, nil
		}
	}
	if len(results) != 1 || statuses(results) != want || results[0].FromServer != fromServer ||
		(wantErr == nil) != (err == nil) || (wantErr != nil && !errors.Is(err, wantErr)) {
		t.Errorf("n=%d of %d (%s, on time %v), reply %s: results %+v, err %v; want %s (from the server %v), err %v",
			n, len(tx), kind, onTime, r, results, err, want, fromServer, wantErr)
		return
	}
	// At 0 the reply may also come with the EHLO reply's bytes, a
	// reply to nothing: a violation either way.
	if !onTime && n > 0 && !strings.Contains(err.Error(), errEarly.Error()) {
		t.Errorf("n=%d, reply %s: err %v, want it named early", n, r, err)
	}
}
