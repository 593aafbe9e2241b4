package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
)

// SendResult is the outcome of one test submission, with swaks-like
// timings.
type SendResult struct {
	Addr      string     `json:"addr"`
	Protocol  Protocol   `json:"protocol"`
	MessageID string     `json:"message_id"`
	State     State      `json:"state"`
	Reply     *ReplyJSON `json:"reply,omitempty"`
	// SMTP is the dialogue's replies for --smtp, one line per command.
	SMTP  []string `json:"smtp,omitempty"`
	Error string   `json:"error,omitempty"`
	// ConnectMS is the connect; SendMS from connected to the last byte
	// written; ReplyMS from the last byte written to the first byte of
	// the reply (the server's work: queueing, fsync); TotalMS connect to
	// reply read.
	ConnectMS float64 `json:"connect_ms"`
	SendMS    float64 `json:"send_ms"`
	ReplyMS   float64 `json:"first_reply_byte_ms"`
	TotalMS   float64 `json:"total_ms"`
	Code      int     `json:"code"`
}

// TestMessage builds the small message --send submits, LF line ends.
func TestMessage(from, rcpt string, now time.Time) (msg []byte, messageID string) {
	var rnd [8]byte
	rand.Read(rnd[:])
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	messageID = fmt.Sprintf("<qbox-probe.%d.%s@%s>", now.Unix(), hex.EncodeToString(rnd[:]), host)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\n", orNull(from))
	fmt.Fprintf(&b, "To: %s\n", rcpt)
	fmt.Fprintf(&b, "Subject: qbox probe test %s\n", now.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Date: %s\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\n", messageID)
	fmt.Fprintf(&b, "X-Mailer: qbox probe --send\n\n")
	fmt.Fprintf(&b, "This is a test message sent by qbox probe --send.\n")
	return b.Bytes(), messageID
}

func orNull(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}

// timingConn records when the last byte was written and when the first
// byte after it was read: the server's time to answer.
type timingConn struct {
	net.Conn
	mu        sync.Mutex
	lastWrite time.Time
	firstRead time.Time
}

func (c *timingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.mu.Lock()
		c.lastWrite = time.Now()
		c.firstRead = time.Time{}
		c.mu.Unlock()
	}
	return n, err
}

func (c *timingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if c.firstRead.IsZero() {
			c.firstRead = time.Now()
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *timingConn) times() (time.Time, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastWrite, c.firstRead
}

// Send submits one test message to addr over protocol proto and reports
// the reply and its timings. timeout bounds each write and the whole wait
// for each reply.
func (p *Prober) Send(ctx context.Context, addr string, protocol Protocol, from, rcpt string, timeout time.Duration) SendResult {
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	msg, id := TestMessage(from, rcpt, time.Now())
	res := SendResult{Addr: addr, Protocol: protocol, MessageID: id}
	start := time.Now()
	raw, took, err := p.Connect(ctx, addr)
	res.ConnectMS = ms(took)
	if err != nil {
		res.State = ConnectState(err)
		res.Error = err.Error()
		res.Code = CodeDown
		return res
	}
	res.State = Open
	conn := &timingConn{Conn: raw}
	defer conn.Close()
	connected := time.Now()
	env := proto.Envelope{Sender: from, Recipients: []string{rcpt}}

	var reply proto.Reply
	var lastWrite, firstRead time.Time
	switch protocol {
	case QMQP:
		reply, err = qmqp.Exchange(conn, env, bytes.NewReader(msg), int64(len(msg)), timeout)
	case QMTP:
		reply, err = sendQMTP(ctx, conn, env, msg, timeout)
	case SMTP:
		// The reply that counts is the one to the end of the data, not
		// to QUIT.
		reply, res.SMTP, err = sendSMTP(conn, env, msg, timeout, func() { lastWrite, firstRead = conn.times() })
	default:
		err = fmt.Errorf("no protocol to send with")
	}
	end := time.Now()
	if lastWrite.IsZero() {
		lastWrite, firstRead = conn.times()
	}
	if !lastWrite.IsZero() {
		res.SendMS = ms(lastWrite.Sub(connected))
		if firstRead.After(lastWrite) {
			res.ReplyMS = ms(firstRead.Sub(lastWrite))
		}
	}
	res.TotalMS = ms(end.Sub(start))
	if err != nil {
		res.Error = err.Error()
		res.Code = CodeUnexpected
		return res
	}
	res.Reply = replyJSON(reply)
	if reply.Status != proto.OK {
		res.Code = CodeUnexpected
	}
	return res
}

func sendQMTP(ctx context.Context, conn net.Conn, env proto.Envelope, msg []byte, timeout time.Duration) (proto.Reply, error) {
	c := &qmtp.Client{WriteTimeout: timeout, ReadTimeout: timeout}
	pkg := qmtp.Package{
		Sender:     env.Sender,
		Recipients: env.Recipients,
		Size:       int64(len(msg)),
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil },
	}
	var reply proto.Reply
	var fromServer bool
	_, err := c.Send(ctx, conn, []qmtp.Package{pkg}, func(r qmtp.RecipientResult) {
		reply, fromServer = r.Reply, r.FromServer
	})
	if err != nil && !fromServer {
		return proto.Reply{}, err
	}
	return reply, nil
}

// sendSMTP runs a minimal SMTP dialogue (HELO, MAIL, RCPT, DATA, QUIT)
// and returns the reply to the end of DATA, or the first refusal, as a
// K/Z/D reply (2xx, 4xx, 5xx), with every reply line for the report.
func sendSMTP(conn net.Conn, env proto.Envelope, msg []byte, timeout time.Duration, dataAnswered func()) (proto.Reply, []string, error) {
	dc := &deadlined{conn: conn, timeout: timeout}
	tp := textproto.NewConn(dc)
	var log []string
	read := func(cmd string) (int, string, error) {
		dc.awaitReply()
		code, text, err := tp.ReadResponse(0)
		if dc.failed != nil {
			// bufio hands a line cut short by a read error (a timeout)
			// over as if it were whole: it is no reply.
			return 0, "", fmt.Errorf("%s: %w", cmd, dc.failed)
		}
		if err != nil && code == 0 {
			return 0, "", fmt.Errorf("%s: %w", cmd, err)
		}
		line := fmt.Sprintf("%s -> %d %s", cmd, code, proto.Printable(strings.ReplaceAll(text, "\n", " / "), 512))
		log = append(log, line)
		return code, text, nil
	}
	asReply := func(code int, text string) proto.Reply {
		t := fmt.Sprintf("%d %s", code, text)
		switch {
		case code >= 200 && code < 400:
			return proto.K(t)
		case code >= 500:
			return proto.D(t)
		}
		return proto.Z(t)
	}
	quit := func() {
		tp.PrintfLine("QUIT")
		read("QUIT")
	}
	code, text, err := read("greeting")
	if err != nil {
		return proto.Reply{}, log, err
	}
	if code != 220 {
		return asReply(code, text), log, nil
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	steps := []struct{ cmd, line string }{
		{"HELO", "HELO " + host},
		{"MAIL", "MAIL FROM:<" + env.Sender + ">"},
		{"RCPT", "RCPT TO:<" + env.Recipients[0] + ">"},
		{"DATA", "DATA"},
	}
	for _, s := range steps {
		if err := tp.PrintfLine("%s", s.line); err != nil {
			return proto.Reply{}, log, fmt.Errorf("%s: %w", s.cmd, err)
		}
		code, text, err := read(s.cmd)
		if err != nil {
			return proto.Reply{}, log, err
		}
		if (s.cmd == "DATA" && code != 354) || (s.cmd != "DATA" && code/100 != 2) {
			quit()
			return asReply(code, text), log, nil
		}
	}
	w := tp.DotWriter()
	bw := bufio.NewWriter(w)
	bw.Write(msg)
	if err := bw.Flush(); err != nil {
		return proto.Reply{}, log, fmt.Errorf("sending message: %w", err)
	}
	if err := w.Close(); err != nil {
		return proto.Reply{}, log, fmt.Errorf("sending message: %w", err)
	}
	code, text, err = read("end of data")
	if err != nil {
		return proto.Reply{}, log, err
	}
	dataAnswered()
	quit()
	return asReply(code, text), log, nil
}

// maxSMTPRead bounds what an SMTP server may send during --send: the
// replies of a short dialogue, not an endless line.
const maxSMTPRead = 1 << 20

// errTooMuch ends a dialogue with a server that talks too much.
var errTooMuch = fmt.Errorf("server sent more than %d bytes of replies", maxSMTPRead)

// deadlined sets a fresh deadline before each write, one deadline for
// each reply (awaitReply: a server trickling a reply cannot stretch it),
// and caps what is read.
type deadlined struct {
	conn    net.Conn
	timeout time.Duration
	read    int
	failed  error // the first read error
}

func (d *deadlined) Read(p []byte) (int, error) {
	if d.read >= maxSMTPRead {
		return 0, errTooMuch
	}
	if len(p) > maxSMTPRead-d.read {
		p = p[:maxSMTPRead-d.read]
	}
	n, err := d.conn.Read(p)
	d.read += n
	if err != nil && d.failed == nil {
		d.failed = err
	}
	return n, err
}

// awaitReply starts the wait for a reply: it must be complete within the
// timeout.
func (d *deadlined) awaitReply() {
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
}

func (d *deadlined) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}

func (d *deadlined) Close() error { return d.conn.Close() }
