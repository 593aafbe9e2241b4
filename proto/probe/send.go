package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/smtp"
)

// SendResult is the outcome of one test submission, with swaks-like
// timings.
type SendResult struct {
	Addr      string     `json:"addr"`
	Protocol  Protocol   `json:"protocol"`
	MessageID string     `json:"message_id"`
	State     State      `json:"state"`
	Reply     *ReplyJSON `json:"reply,omitempty"`
	// SMTP is the dialogue's replies for --smtp, one line per reply:
	// "RCPT -> 250 2.1.5 Ok".
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
	Verdict   Verdict `json:"verdict"`
	// TLS is the handshake the message went inside (Prober.TLS): it is
	// sent only when the certificate verifies.
	TLS *TLSInfo `json:"tls,omitempty"`
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

// NetConn is the connection underneath, so that the clients can still
// read the socket's count of bytes received (proto.MarkArrivals) and judge
// an early reply at the socket.
func (c *timingConn) NetConn() net.Conn { return c.Conn }

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

// Send submits one test message to addr over protocol and reports the
// reply and its timings. timeout bounds each write and the whole wait for
// each reply.
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
		res.Verdict = Down
		return res
	}
	res.State = Open
	if p.TLS {
		tc, info := p.startTLS(ctx, raw, addr)
		res.TLS = info
		switch {
		case tc == nil:
			raw.Close()
			res.Error, res.Verdict = "does not speak TLS: "+info.Error, Unexpected
			return res
		case !info.Verified:
			// A test message goes to a server whose certificate
			// verifies, as mail would; this one is only shown.
			tc.Close()
			res.Error, res.Verdict = "nothing sent: the certificate is NOT verified: "+info.VerifyError, Unexpected
			return res
		}
		raw = tc
	}
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
		reply, res.SMTP, err = sendSMTP(ctx, conn, p.Helo, env, msg, timeout, func() { lastWrite, firstRead = conn.times() })
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
		res.Verdict = Unexpected
		return res
	}
	res.Reply = replyJSON(reply)
	if reply.Status != proto.OK {
		res.Verdict = Unexpected
	}
	return res
}

// message is msg as the clients take it: its size and how to open it.
func message(msg []byte) (int64, func() (io.ReadCloser, error)) {
	return int64(len(msg)), func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(msg)), nil }
}

func sendQMTP(ctx context.Context, conn net.Conn, env proto.Envelope, msg []byte, timeout time.Duration) (proto.Reply, error) {
	c := &qmtp.Client{WriteTimeout: timeout, ReadTimeout: timeout}
	size, open := message(msg)
	pkg := proto.Message{Sender: env.Sender, Recipients: env.Recipients, Size: size, Open: open}
	var reply proto.Reply
	var fromServer bool
	_, err := c.Send(ctx, conn, []proto.Message{pkg}, func(r proto.Result) {
		reply, fromServer = r.Reply, r.FromServer
	})
	if err != nil && !fromServer {
		return proto.Reply{}, err
	}
	return reply, nil
}

// sendSMTP runs one SMTP session for the message through proto/smtp's
// client, in plain text so that the dialogue can be shown, with timeout
// for every reply and for writing the message. It returns the reply to
// the end of the data, or the refusal that decided (greeting, EHLO, MAIL,
// RCPT, DATA), with every reply for the report; dataAnswered is called
// once the reply to the end of the data has arrived, before QUIT.
func sendSMTP(ctx context.Context, conn net.Conn, helo string, env proto.Envelope, msg []byte, timeout time.Duration, dataAnswered func()) (proto.Reply, []string, error) {
	c := &smtp.Client{Helo: helo, CommandTimeout: timeout, DataTimeout: timeout, TLS: smtp.TLSNone}
	size, open := message(msg)
	var log []string
	r, err := c.SendOne(ctx, conn, "", proto.Message{Sender: env.Sender, Recipients: env.Recipients, Size: size, Open: open},
		func(e smtp.Exchange) {
			if e.Command == "end of data" {
				dataAnswered()
			}
			log = append(log, fmt.Sprintf("%s -> %d %s", e.Command, e.Code, proto.Printable(strings.Join(e.Lines, " / "), 512)))
		})
	if !r.FromServer {
		if err == nil {
			err = fmt.Errorf("no reply: %s", r.Reply.Text)
		}
		return proto.Reply{}, log, err
	}
	return r.Reply, log, nil
}
