package queue

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/store/maildir"
)

func newQueue(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "queue")
	if err := maildir.Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func put(t *testing.T, dir, name, sender, rcpt, body string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(dir, "new", name)
	if err := os.WriteFile(p, []byte("Return-Path: <"+sender+">\nDelivered-To: "+rcpt+"\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	return p
}

func left(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	for _, sub := range []string{"new", "cur"} {
		es, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			names = append(names, sub+"/"+e.Name())
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// qmqpServer answers like a QMQP server: by the first recipient's
// prefix, k- K, z- Z, d- D.
type qmqpServer struct {
	sent   []proto.Envelope
	onSend func()
}

func (s *qmqpServer) Send(_ context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	if _, err := io.ReadAll(msg); err != nil {
		return proto.Reply{}, err
	}
	s.sent = append(s.sent, env)
	if s.onSend != nil {
		s.onSend()
	}
	switch {
	case strings.HasPrefix(env.Recipients[0], "z-"):
		return proto.Z("busy"), nil
	case strings.HasPrefix(env.Recipients[0], "d-"):
		return proto.D("no such user"), nil
	}
	return proto.K("ok"), nil
}

// bouncer records the notices it is given and accepts them.
type bouncer struct{ notices []Notice }

func (b *bouncer) Bounce(_ context.Context, n *Notice) (string, bool, error) {
	c := *n
	if n.Open != nil {
		rd, err := n.Open()
		if err != nil {
			return "", false, err
		}
		body, _ := io.ReadAll(rd)
		rd.Close()
		c.Reason += " [attached: " + string(body) + "]"
	}
	b.notices = append(b.notices, c)
	return "accepted", false, nil
}

func collect(out *[]Outcome) Events {
	return Events{Outcome: func(o Outcome) { *out = append(*out, o) }}
}

func statuses(outs []Outcome) string {
	var s []string
	for _, o := range outs {
		s = append(s, o.File+"="+o.Status)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// K removes, Z keeps, D bounces then removes; identical messages travel
// as one package when grouping.
func TestRunActsOnEachReply(t *testing.T) {
	dir := newQueue(t)
	put(t, dir, "1", "s@x.test", "k-1@y.test", "same\n", time.Hour)
	put(t, dir, "2", "s@x.test", "k-2@y.test", "same\n", time.Hour)
	put(t, dir, "3", "s@x.test", "z-1@y.test", "other\n", time.Hour)
	put(t, dir, "4", "s@x.test", "d-1@y.test", "third\n", time.Hour)
	srv, b := &qmqpServer{}, &bouncer{}
	var outs []Outcome
	sum, err := Run(context.Background(), Config{Source: &Maildir{Dir: dir, Group: true}, Transport: &QMQP{Client: srv}, Bouncer: b, Events: collect(&outs)})
	if !errors.Is(err, ErrRemaining) {
		t.Fatalf("err %v", err)
	}
	if got, want := statuses(outs), "new/1=succeeded new/2=succeeded new/3=deferred new/4=bounced"; got != want {
		t.Errorf("outcomes %s, want %s", got, want)
	}
	if len(srv.sent) != 3 || len(srv.sent[0].Recipients) != 2 {
		t.Errorf("sent %v, want the two identical messages as one package", srv.sent)
	}
	if len(b.notices) != 1 || b.notices[0].Failures[0].Recipient != "d-1@y.test" || b.notices[0].Failures[0].DiagnosticType != "X-QMQP" {
		t.Errorf("notices %+v", b.notices)
	}
	if l := left(t, dir); l != "new/3" || sum.Remaining != 1 {
		t.Errorf("left %s (summary %+v)", l, sum)
	}
}

// A transport that cannot connect touches nothing and reports nothing
// per file.
func TestRunUnreachableTouchesNothing(t *testing.T) {
	dir := newQueue(t)
	put(t, dir, "1", "s@x.test", "d-1@y.test", "x\n", 30*24*time.Hour)
	var outs []Outcome
	qt := &QMTP{Connect: func(context.Context) (net.Conn, string, error) { return nil, "", errors.New("connection refused") }}
	sum, err := Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: qt, Lifetime: time.Hour, Bouncer: &bouncer{}, Events: collect(&outs)})
	var ue *UnreachableError
	if !errors.As(err, &ue) || sum.Unreachable == "" || len(outs) != 0 || left(t, dir) != "new/1" {
		t.Fatalf("err %v, summary %+v, outcomes %v, left %s", err, sum, outs, left(t, dir))
	}
}

// The spool's rule (ExpireUnanswered): past the lifetime a message no
// server could be asked about bounces; without it (serialmail's rule) it
// stays.
func TestRunExpireUnanswered(t *testing.T) {
	for _, expire := range []bool{false, true} {
		dir := newQueue(t)
		put(t, dir, "1", "s@x.test", "k-1@y.test", "x\n", 30*24*time.Hour)
		var outs []Outcome
		_, err := Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: &QMQP{}, Lifetime: time.Hour, ExpireUnanswered: expire, Bouncer: &bouncer{}, Events: collect(&outs)})
		want := "new/1=deferred"
		if expire {
			want = "new/1=bounced"
		}
		if got := statuses(outs); got != want || (expire != (err == nil)) {
			t.Errorf("ExpireUnanswered %v: %s (err %v), want %s", expire, got, err, want)
		}
	}
}

// Asked to stop while a package is under way: its reply is acted on, no
// further package starts, and the rest is deferred as not started.
func TestRunInterrupted(t *testing.T) {
	dir := newQueue(t)
	for i, n := range []string{"1", "2", "3"} {
		put(t, dir, n, "s@x.test", "k-"+n+"@y.test", "message "+n+"\n", time.Duration(3-i)*time.Hour)
	}
	stop := make(chan struct{})
	srv := &qmqpServer{onSend: func() { close(stop) }}
	var outs []Outcome
	ctx := proto.WithStopStarting(context.Background(), stop)
	sum, err := Run(ctx, Config{Source: &Maildir{Dir: dir}, Transport: &QMQP{Client: srv}, Events: collect(&outs)})
	if !errors.Is(err, proto.ErrInterrupted) || !sum.Interrupted || len(srv.sent) != 1 {
		t.Fatalf("err %v, summary %+v, %d sent", err, sum, len(srv.sent))
	}
	notStarted := 0
	for _, o := range outs {
		if o.NotStarted {
			notStarted++
		}
	}
	if got := statuses(outs); got != "new/1=succeeded new/2=deferred new/3=deferred" || notStarted != 2 {
		t.Errorf("outcomes %s, %d not started", got, notStarted)
	}
	if l := left(t, dir); l != "new/2 new/3" {
		t.Errorf("left %s", l)
	}
}

// swapping replaces a file by a symlink after the scan, before the
// transport opens it.
type swapping struct {
	Transport
	path, target string
}

func (s *swapping) Deliver(ctx context.Context, pkgs []proto.Message, onResult func(proto.Result)) (Stats, error) {
	os.Remove(s.path)
	os.Symlink(s.target, s.path)
	return s.Transport.Deliver(ctx, pkgs, onResult)
}

// A file the scan saw and OpenMessage then refuses is "malformed", not
// "deferred", and nothing of it is sent.
func TestRunOpenRefusedIsMalformed(t *testing.T) {
	dir := newQueue(t)
	p := put(t, dir, "1", "s@x.test", "k-1@y.test", "honest\n", time.Hour)
	target := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(target, []byte("Return-Path: <s@x.test>\nDelivered-To: k-1@y.test\nsecret\n"), 0o600)
	srv := &qmqpServer{}
	var outs []Outcome
	sum, _ := Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: &swapping{Transport: &QMQP{Client: srv}, path: p, target: target}, Events: collect(&outs)})
	if got := statuses(outs); got != "new/1=malformed" || sum.Malformed != 1 || sum.Deferred != 0 || len(srv.sent) != 0 {
		t.Fatalf("outcomes %s, summary %+v, sent %v", got, sum, srv.sent)
	}
	var bad *Broken
	if bad = outs[0].Bad; bad == nil || bad.Name != "new/1" {
		t.Errorf("outcome without the malformed file: %+v", outs[0])
	}
}

// Malformed files past the lifetime: reported to the postmaster (the
// regular file attached, the symlink not opened) and removed; the
// symlink's target stays. Without a bouncer they stay, noted.
func TestRunMalformedPastLifetime(t *testing.T) {
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("not yours\n"), 0o600)
	setup := func() string {
		dir := newQueue(t)
		os.WriteFile(filepath.Join(dir, "new", "bad"), []byte("garbage\n"), 0o600)
		if err := os.Symlink(target, filepath.Join(dir, "new", "link")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }

	dir := setup()
	var outs []Outcome
	sum, _ := Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: &QMQP{}, Lifetime: time.Hour, KeepNote: "no bounce", Now: later, Events: collect(&outs)})
	if got := statuses(outs); got != "new/bad=malformed new/link=malformed" || sum.Malformed != 2 || left(t, dir) != "new/bad new/link" {
		t.Fatalf("without a bouncer: %s, %+v, left %s", got, sum, left(t, dir))
	}
	for _, o := range outs {
		if !strings.Contains(o.Note, "too old; kept (no bounce)") {
			t.Errorf("%s: note %q", o.File, o.Note)
		}
	}

	dir = setup()
	outs = nil
	b := &bouncer{}
	sum, err := Run(context.Background(), Config{Source: &Maildir{Dir: dir}, Transport: &QMQP{}, Lifetime: time.Hour, Bouncer: b, Now: later, Events: collect(&outs)})
	if err != nil || statuses(outs) != "new/bad=bounced new/link=bounced" || left(t, dir) != "" {
		t.Fatalf("with a bouncer: %v %s, left %s", err, statuses(outs), left(t, dir))
	}
	if len(b.notices) != 2 {
		t.Fatalf("%d notices", len(b.notices))
	}
	for _, n := range b.notices {
		if n.Sender != "" {
			t.Errorf("notice to %q, want the postmaster (null sender)", n.Sender)
		}
		attached := strings.Contains(n.Reason, "[attached: garbage\n]")
		if strings.Contains(n.Reason, "new/bad") != attached || strings.Contains(n.Reason, "not yours") {
			t.Errorf("notice %q: the regular file goes with its report, the symlink's target never", n.Reason)
		}
	}
	if got, err := os.ReadFile(target); err != nil || string(got) != "not yours\n" {
		t.Errorf("the target changed: %q %v", got, err)
	}
}
