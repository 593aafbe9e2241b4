package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"qbox/commands/exitcode"
	"qbox/commands/promtext"
	"qbox/proto"
	"qbox/proto/server"
)

// Metrics are serve's Prometheus metrics (serve --metrics ADDR): sessions
// by protocol, refused connections, messages and recipients by their
// replies (K, Z, D), bytes received, and the store's latency.
//
// The protocol servers already write one structured log event per
// session, per message and per refused connection (proto/qmqp, qmtp,
// smtp, serverloop); Tap counts those events as they are logged, so the
// metrics and the log can never disagree and the servers carry no second
// reporting path. The store's latency is measured around the Backend
// (Instrument).
type Metrics struct {
	reg        promtext.Registry
	sessions   *promtext.Vec
	refused    *promtext.Vec
	messages   *promtext.Vec
	recipients *promtext.Vec
	bytes      *promtext.Vec
	store      *promtext.Histogram
}

// NewMetrics makes serve's metrics, with a few of the Go runtime's and
// the process's (goroutines, memory, descriptors, start time) beside them.
func NewMetrics() *Metrics {
	m := &Metrics{
		sessions: promtext.NewCounter("qbox_serve_sessions_total",
			"Sessions served (connections admitted and run), by protocol.", "proto"),
		refused: promtext.NewCounter("qbox_serve_refused_connections_total",
			"Connections refused: not_authorized (outside --allow) or busy (no session free: --max-conns, --max-waiting).",
			"proto", "reason"),
		messages: promtext.NewCounter("qbox_serve_messages_total",
			"Messages answered, by protocol and result: K every recipient accepted, Z any deferred, D otherwise.",
			"proto", "result"),
		recipients: promtext.NewCounter("qbox_serve_recipients_total",
			"Recipients of the messages answered, by protocol and their reply (SMTP: the message's final reply).",
			"proto", "result"),
		bytes: promtext.NewCounter("qbox_serve_received_bytes_total",
			"Bytes of the messages answered, by protocol.", "proto"),
		store: promtext.NewHistogram("qbox_serve_store_seconds",
			"Time the store took to answer a message once its last byte arrived (the fsyncs, or the queue program).",
			promtext.ExponentialBuckets(0.0005, 2.5, 12)),
	}
	m.reg.Register(m.sessions, m.refused, m.messages, m.recipients, m.bytes, m.store, promtext.Func(processMetrics))
	for _, p := range []string{QMQP, QMTP, SMTP} { // every series exists from the start, at 0
		m.sessions.Add(0, p)
		m.bytes.Add(0, p)
		for _, r := range []string{"K", "Z", "D"} {
			m.messages.Add(0, p, r)
			m.recipients.Add(0, p, r)
		}
		for _, r := range []string{"not_authorized", "busy"} {
			m.refused.Add(0, p, r)
		}
	}
	return m
}

// processStart is when this process started, near enough for
// process_start_time_seconds (package initialisation).
var processStart = time.Now()

// processMetrics writes the Go runtime's and the process's few gauges
// that tell a leak or a restart: goroutines, resident memory, open
// descriptors, start time.
func processMetrics(w *bufio.Writer) {
	promtext.Gauge(w, "go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseFloat(f[1], 64); err == nil {
				promtext.Gauge(w, "process_resident_memory_bytes", "Resident memory size in bytes.", pages*float64(os.Getpagesize()))
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		promtext.Gauge(w, "process_open_fds", "Number of open file descriptors.", float64(len(ents)))
	}
	promtext.Gauge(w, "process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", float64(processStart.UnixNano())/1e9)
}

// Tap returns a log handler that counts the servers' events, then passes
// every record on to next as it is.
func (m *Metrics) Tap(next slog.Handler) slog.Handler { return &tap{m: m, next: next} }

type tap struct {
	m     *Metrics
	next  slog.Handler
	attrs []slog.Attr // from WithAttrs
	group bool        // under WithGroup: the attributes are not the servers' own
}

func (t *tap) Enabled(context.Context, slog.Level) bool { return true } // count what next does not print too

func (t *tap) Handle(ctx context.Context, r slog.Record) error {
	if !t.group {
		t.m.count(r, t.attrs)
	}
	if !t.next.Enabled(ctx, r.Level) {
		return nil
	}
	return t.next.Handle(ctx, r)
}

func (t *tap) WithAttrs(as []slog.Attr) slog.Handler {
	return &tap{m: t.m, next: t.next.WithAttrs(as), attrs: append(append([]slog.Attr(nil), t.attrs...), as...), group: t.group}
}

func (t *tap) WithGroup(name string) slog.Handler {
	return &tap{m: t.m, next: t.next.WithGroup(name), attrs: t.attrs, group: true}
}

// count reads one server event.
func (m *Metrics) count(r slog.Record, with []slog.Attr) {
	switch r.Message {
	case "connection", "connection ended", "connection ended without a reply",
		"qmqp message", "qmqp message not accepted",
		"qmtp message", "smtp message",
		"client not authorized", "connection refused: too many connections":
	default:
		return
	}
	a := map[string]slog.Value{}
	for _, at := range with {
		a[at.Key] = at.Value.Resolve()
	}
	r.Attrs(func(at slog.Attr) bool {
		a[at.Key] = at.Value.Resolve()
		return true
	})
	p := strings.ToLower(a["proto"].String())
	switch p {
	case QMQP, QMTP, SMTP:
	default:
		return // not a server's event
	}
	num := func(key string) int64 {
		switch v := a[key]; v.Kind() {
		case slog.KindInt64:
			return max(v.Int64(), 0)
		case slog.KindUint64:
			return int64(min(v.Uint64(), 1<<62))
		}
		return 0
	}
	switch r.Message {
	case "client not authorized":
		m.refused.Add(1, p, "not_authorized")
	case "connection refused: too many connections":
		m.refused.Add(1, p, "busy")
	case "connection", "connection ended", "connection ended without a reply":
		m.sessions.Add(1, p)
	case "qmqp message", "qmqp message not accepted":
		res := "Z" // not accepted: no reply reached the client, which sends again
		if r.Message == "qmqp message" {
			// One message per QMQP connection: its line stands for the
			// session's (a failed one has its own connection line).
			m.sessions.Add(1, p)
			if reply := a["reply"].String(); reply != "" && strings.IndexByte("KZD", reply[0]) >= 0 {
				res = reply[:1]
			}
		}
		m.messages.Add(1, p, res)
		m.recipients.Add(float64(num("recipients")), p, res)
		m.bytes.Add(float64(num("size")), p)
	case "qmtp message":
		k, z, d := num("accepted"), num("deferred"), num("rejected")
		m.messages.Add(1, p, judge(k, z, d))
		m.recipients.Add(float64(k), p, "K")
		m.recipients.Add(float64(z), p, "Z")
		m.recipients.Add(float64(d), p, "D")
		m.bytes.Add(float64(num("size")), p)
	case "smtp message":
		res := "D"
		switch code := a["reply"].String(); {
		case strings.HasPrefix(code, "2"):
			res = "K"
		case strings.HasPrefix(code, "4"):
			res = "Z"
		}
		m.messages.Add(1, p, res)
		m.recipients.Add(float64(num("recipients")), p, res)
		m.bytes.Add(float64(num("size")), p)
	}
}

// judge is a message's result from its recipients' replies, as SMTP's
// final reply judges it: K when all got K, Z when any got Z, else D.
func judge(k, z, d int64) string {
	switch {
	case z > 0:
		return "Z"
	case d > 0:
		return "D"
	case k > 0:
		return "K"
	}
	return "Z"
}

// Instrument wraps b so that each Commit's duration goes into the store
// latency histogram.
func (m *Metrics) Instrument(b proto.Backend) proto.Backend { return &timedBackend{b: b, h: m.store} }

type timedBackend struct {
	b proto.Backend
	h *promtext.Histogram
}

func (t *timedBackend) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	d, err := t.b.Begin(ctx, peer, size)
	if err != nil {
		return nil, err
	}
	return &timedDelivery{Delivery: d, h: t.h}, nil
}

type timedDelivery struct {
	proto.Delivery
	h *promtext.Histogram
}

func (t *timedDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	start := time.Now()
	defer func() { t.h.Observe(time.Since(start).Seconds()) }()
	return t.Delivery.Commit(ctx, env)
}

// ListenMetrics opens --metrics ADDR. Like the mail ports, an address
// that is not loopback needs --allow: metrics tell who sends how much.
func ListenMetrics(addr string, allow []netip.Prefix) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, exitcode.Temp(fmt.Errorf("--metrics: %w", err))
	}
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && len(allow) == 0 && !ap.Addr().Unmap().IsLoopback() {
		l.Close()
		return nil, exitcode.Usage("--metrics listens on %s, which is not a loopback address, and no --allow is given: add --allow CIDR for the scrapers, or listen on 127.0.0.1", l.Addr())
	}
	return l, nil
}

// ServeMetrics serves /metrics on l to the clients allow admits
// (loopback only when it is empty, as for the mail ports; 403 for the
// others) until ctx is done. It speaks the little HTTP/1.1 a scraper
// needs over the mail servers' loop (proto/server: access check, slots,
// accept backoff, linger), not net/http, whose package initialisers every
// start of every personality paid: one request per connection, its head
// at most metricsMaxHead bytes, each read and write within
// metricsTimeout, the whole within metricsSession.
func (m *Metrics) ServeMetrics(ctx context.Context, l net.Listener, allow []netip.Prefix) error {
	// The loop admits every client; the session reads the request
	// before it answers 403, as HTTP clients expect.
	anyAddress := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	lp := &server.Loop{Allow: anyAddress, Conns: server.NewConnLimit(metricsConns, 0, metricsTimeout)}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		lp.Shutdown(shut)
	}()
	cfg := &server.Config{
		Protocol: "metrics",
		Timeout:  metricsTimeout,
		Refuse:   func(w io.Writer) error { return writeHTTP(w, "403 Forbidden", []byte("not authorized\n"), true) },
		Session: func(ctx context.Context, c server.Conn, peer proto.Peer) server.Outcome {
			ip, _ := netip.ParseAddr(peer.RemoteIP)
			return m.scrape(ctx, c, server.Allowed(allow, ip))
		},
	}
	if err := lp.Serve(l, cfg); !errors.Is(err, server.ErrServerClosed) {
		return err
	}
	return nil
}

// The bounds of a /metrics connection.
const (
	metricsConns   = 16               // at once; more wait (metricsTimeout) or are closed
	metricsMaxHead = 16 << 10         // request line and headers
	metricsTimeout = 10 * time.Second // each read and write
	metricsSession = 30 * time.Second // the whole connection
)

// scrape answers one HTTP request: 400 for what is not an HTTP/1
// request head, 403 for a client not allowed, the metrics for /metrics
// (any method, as net/http's ServeMux answered; HEAD without the body),
// 404 for another path.
func (m *Metrics) scrape(ctx context.Context, c server.Conn, allowed bool) server.Outcome {
	tc := server.NewTimedConn(ctx, c, metricsTimeout, metricsSession)
	defer tc.Close()
	method, path, err := readRequestHead(bufio.NewReader(io.LimitReader(tc, metricsMaxHead)))
	var werr error
	switch {
	case err != nil:
		werr = writeHTTP(tc, "400 Bad Request", []byte("400 Bad Request\n"), true)
	case !allowed:
		werr = writeHTTP(tc, "403 Forbidden", []byte("not authorized\n"), method != "HEAD")
	case path != "/metrics":
		werr = writeHTTP(tc, "404 Not Found", []byte("404 page not found\n"), method != "HEAD")
	default:
		var body bytes.Buffer
		m.reg.WriteTo(&body)
		werr = writeHTTP(tc, "200 OK", body.Bytes(), method != "HEAD")
	}
	if err == nil {
		err = werr
	}
	// The client may still be sending (a body): linger, so that closing
	// does not reset the connection before the reply is read.
	return server.Outcome{Linger: true, Err: err}
}

// readRequestHead reads an HTTP/1 request's line and headers (up to the
// empty line) and returns its method and path (the target without its
// query).
func readRequestHead(r *bufio.Reader) (method, path string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1.") {
		return "", "", fmt.Errorf("not an HTTP/1 request line: %.40q", line)
	}
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		if strings.TrimRight(h, "\r\n") == "" {
			break
		}
	}
	path, _, _ = strings.Cut(f[1], "?")
	return f[0], path, nil
}

// writeHTTP writes an HTTP/1.1 response that closes the connection, with
// body unless withBody is false (HEAD: its length only). Every body is
// text: the metrics in Prometheus' text format (version 0.0.4), or a
// line saying what went wrong.
func writeHTTP(w io.Writer, status string, body []byte, withBody bool) error {
	head := fmt.Sprintf("HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", status, len(body))
	if !withBody {
		body = nil
	}
	_, err := w.Write(append([]byte(head), body...))
	return err
}
