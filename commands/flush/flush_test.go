package flush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/store/maildir"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/testpeer"
)

// serve starts `qbox serve` storing QMTP mail in a fresh maildir and
// returns its QMTP address and the maildir.
func serve(t testing.TB, extra ...string) (string, string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "dest")
	args := append([]string{"--qmtp", "127.0.0.1:0", "--qmqp", ""}, extra...)
	if !contains(extra, "--queue-program") {
		args = append(args, "--maildir", dest)
	}
	return testpeer.StartServe(t, args...).QMTP, dest
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// queued is one message written into the source maildir.
type queued struct {
	name, sender, rcpt string
	body               []byte
}

func newMaildir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "Maildir")
	if err := maildir.Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// enqueue writes a message file as qmail-local would, with the given age.
func enqueue(t testing.TB, dir, name, sender, deliveredTo string, body []byte, age time.Duration) {
	t.Helper()
	p := filepath.Join(dir, "new", name)
	content := append([]byte("Return-Path: <"+sender+">\nDelivered-To: "+deliveredTo+"\n"), body...)
	if err := os.WriteFile(p, content, 0600); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// fill queues n messages with random 8-bit bodies for ppp-<rcpt>.
func fill(t testing.TB, dir string, n int, token string) []queued {
	rng := rand.New(rand.NewSource(int64(n)))
	var out []queued
	for i := 0; i < n; i++ {
		junk := make([]byte, rng.Intn(3000))
		rng.Read(junk)
		body := []byte(fmt.Sprintf("Subject: %s %d\n\n", token, i))
		body = append(body, junk...)
		q := queued{name: fmt.Sprintf("%d.m%03d.host", 1700000000+i, i), sender: fmt.Sprintf("s%d@example.test", i%3), rcpt: fmt.Sprintf("r%03d@remote.test", i), body: body}
		if i == 5 {
			q.sender = "" // a bounce in the queue
		}
		enqueue(t, dir, q.name, q.sender, "ppp-"+q.rcpt, q.body, time.Duration(n-i)*time.Second)
		out = append(out, q)
	}
	return out
}

// delivered reads the files `qbox serve` stored: recipient -> (sender,
// message after the Received line), and counts files per recipient.
func delivered(t testing.TB, dir string) (map[string]queued, map[string]int) {
	t.Helper()
	got := map[string]queued{}
	count := map[string]int{}
	res, err := maildir.Scan(dir, maildir.ScanOptions{TmpMaxAge: -1})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return got, count
		}
		t.Fatal(err)
	}
	for _, e := range res.Entries {
		b, err := os.ReadFile(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		rest := b[e.Offset:]
		if !bytes.HasPrefix(rest, []byte("Received: ")) {
			t.Fatalf("%s: no Received line", e.Name)
		}
		rest = rest[bytes.IndexByte(rest, '\n')+1:]
		got[e.Recipient] = queued{sender: e.Sender, rcpt: e.Recipient, body: rest}
		count[e.Recipient]++
	}
	return got, count
}

func remaining(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, sub+"/"+e.Name())
		}
	}
	return names
}

// runQbox runs the qbox binary and returns stdout, stderr and the exit
// status.
func runQbox(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := testpeer.ExitCode(t, cmd.Run())
	return out.String(), errb.String(), code
}

type jsonReport struct {
	Messages []queue.Outcome `json:"messages"`
	Summary  queue.Summary   `json:"summary"`
}

func parseJSON(t testing.TB, s string) jsonReport {
	t.Helper()
	var r jsonReport
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatalf("--json output %q: %v", s, err)
	}
	return r
}

func TestFlushToServeEndToEnd(t *testing.T) {
	addr, dest := serve(t)
	src := newMaildir(t)
	msgs := fill(t, src, 40, testpeer.Token(t))
	enqueue(t, src, "1700009999.other.host", "x@example.test", "someone-else@remote.test", []byte("Subject: not ours\n\n"), 0)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", src, "ppp-", addr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if n := strings.Count(stdout, "\nsucceeded ") + boolInt(strings.HasPrefix(stdout, "succeeded ")); n != 40 {
		t.Errorf("%d succeeded lines, want 40:\n%s", n, stdout)
	}
	if !strings.Contains(stdout, "summary: 40 succeeded, 0 deferred, 0 failed, 0 bounced") {
		t.Errorf("summary line missing:\n%s", stdout)
	}
	got, count := delivered(t, dest)
	if len(got) != 40 {
		t.Fatalf("serve stored %d recipients, want 40", len(got))
	}
	for _, q := range msgs {
		g, ok := got[q.rcpt]
		switch {
		case !ok:
			t.Errorf("%s not delivered (the prefix must be stripped)", q.rcpt)
		case count[q.rcpt] != 1:
			t.Errorf("%s delivered %d times", q.rcpt, count[q.rcpt])
		case g.sender != q.sender:
			t.Errorf("%s: sender %q, want %q", q.rcpt, g.sender, q.sender)
		case !bytes.Equal(g.body, q.body):
			t.Errorf("%s: body differs", q.rcpt)
		}
	}
	if left := remaining(t, src); len(left) != 1 || left[0] != "new/1700009999.other.host" {
		t.Errorf("source maildir holds %v, want only the file for another prefix", left)
	}

	// A second run finds nothing to send.
	stdout, _, code = runQbox(t, nil, "flush-maildir", "--json", src, "ppp-", addr)
	r := parseJSON(t, stdout)
	if code != 0 || len(r.Messages) != 0 || r.Summary.BytesSent != 0 || r.Summary.Sessions != 0 {
		t.Errorf("second run: exit %d, %+v", code, r)
	}
	if _, count2 := delivered(t, dest); len(count2) != 40 {
		t.Errorf("second run changed the store: %d recipients", len(count2))
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestFlushConnectionCut(t *testing.T) {
	addr, dest := serve(t)
	proxy, err := linksim.Start(addr, linksim.Link{CutAfterReplies: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	src := newMaildir(t)
	fill(t, src, 20, testpeer.Token(t))

	var out bytes.Buffer
	sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Rounds: 1, Connect: hostConnect(proxy.Addr, &qmtp.Client{}), Out: &out, JSON: true})
	if !errors.Is(err, queue.ErrRemaining) {
		t.Fatalf("cut run: %v, want ErrRemaining", err)
	}
	r := parseJSON(t, out.String())
	var kd []string
	for _, m := range r.Messages {
		if m.Status == "succeeded" {
			kd = append(kd, m.File)
			if _, err := os.Stat(filepath.Join(src, m.File)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s got K but is still there", m.File)
			}
		} else if _, err := os.Stat(filepath.Join(src, m.File)); err != nil {
			t.Errorf("%s got no K but is gone: %v", m.File, err)
		}
	}
	if len(kd) != 6 || sum.Succeeded != 6 || sum.Deferred != 14 || len(remaining(t, src)) != 14 {
		t.Fatalf("after the cut: %d K'd, summary %+v, %d left", len(kd), sum, len(remaining(t, src)))
	}

	// The rerun, without the cut, sends exactly the rest.
	out.Reset()
	sum, err = Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Connect: hostConnect(addr, &qmtp.Client{}), Out: &out})
	if err != nil || sum.Succeeded != 14 {
		t.Fatalf("rerun: %v %+v\n%s", err, sum, out.String())
	}
	got, count := delivered(t, dest)
	if len(got) != 20 {
		t.Fatalf("%d recipients delivered, want 20", len(got))
	}
	// Messages acknowledged in the first session were not sent again.
	for i := 0; i < 6; i++ {
		rcpt := fmt.Sprintf("r%03d@remote.test", i)
		if count[rcpt] != 1 {
			t.Errorf("%s (K'd in the cut session) delivered %d times", rcpt, count[rcpt])
		}
	}
}

func TestFlushRoundsRetryAfterCut(t *testing.T) {
	addr, dest := serve(t)
	proxy, err := linksim.Start(addr, linksim.Link{CutAfterReplies: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	src := newMaildir(t)
	fill(t, src, 10, testpeer.Token(t))
	sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Rounds: 5, Connect: hostConnect(proxy.Addr, &qmtp.Client{})})
	if err != nil || sum.Succeeded != 10 || sum.Sessions != 3 {
		t.Fatalf("%v %+v", err, sum)
	}
	if got, _ := delivered(t, dest); len(got) != 10 {
		t.Fatalf("%d delivered", len(got))
	}
}

// A bounce that cannot be injected keeps the message; an unreachable
// server touches nothing.
func TestFlushNothingLostWhenThingsAreDown(t *testing.T) {
	addr, _ := serve(t, "--max-size", "1K")
	closed := testpeer.ClosedAddr(t)
	src := newMaildir(t)
	enqueue(t, src, "1700000001.big.host", "s@example.test", "ppp-r@remote.test", bytes.Repeat([]byte("x\n"), 1000), time.Hour)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--bounce-server", closed, src, "ppp-", addr)
	if code != 111 || len(remaining(t, src)) != 1 {
		t.Fatalf("bounce server down: exit %d, left %v\n%s%s", code, remaining(t, src), stdout, stderr)
	}
	if !strings.Contains(stdout, "failed new/1700000001.big.host") || !strings.Contains(stdout, "bounce not injected") {
		t.Errorf("output:\n%s", stdout)
	}
	stdout, stderr, code = runQbox(t, nil, "flush-maildir", "--lifetime", "1s", "--bounce-server", closed, src, "ppp-", closed)
	if code != 111 || len(remaining(t, src)) != 1 || !strings.Contains(stdout, "server unreachable") {
		t.Fatalf("QMTP server down: exit %d, left %v\n%s%s", code, remaining(t, src), stdout, stderr)
	}
}

func TestFlushLock(t *testing.T) {
	src := newMaildir(t)
	enqueue(t, src, "1700000001.m.host", "s@example.test", "ppp-r@remote.test", []byte("x\n"), 0)
	lock, err := maildir.TryLock(src)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, stderr, code := runQbox(t, nil, "flush-maildir", src, "ppp-", testpeer.ClosedAddr(t))
	lock.Unlock()
	if code != 111 || !strings.Contains(stderr, "another flush of") {
		t.Fatalf("second flush: exit %d, stderr %q", code, stderr)
	}
	// A guard, not a measure: a flush that waited for the lock would wait
	// until runQbox gave up, as the lock is held until it returns.
	if time.Since(start) > time.Minute {
		t.Errorf("the second flush waited for the lock")
	}
	if len(remaining(t, src)) != 1 {
		t.Error("the locked-out flush touched the maildir")
	}
}

func TestFlushMalformedReported(t *testing.T) {
	addr, _ := serve(t)
	src := newMaildir(t)
	enqueue(t, src, "1700000001.ok.host", "s@example.test", "ppp-r@remote.test", []byte("x\n"), time.Minute)
	if err := os.WriteFile(filepath.Join(src, "new", "1700000002.bad.host"), []byte("From: nobody\nDelivered-To: ppp-r2@remote.test\n\n"), 0600); err != nil {
		t.Fatal(err)
	}
	stdout, _, code := runQbox(t, nil, "flush-maildir", src, "ppp-", addr)
	if code != 111 {
		t.Fatalf("exit %d, want 111 (a malformed file remains)", code)
	}
	if !strings.Contains(stdout, "malformed new/1700000002.bad.host") || !strings.Contains(stdout, "succeeded new/1700000001.ok.host") {
		t.Errorf("output:\n%s", stdout)
	}
	if left := remaining(t, src); len(left) != 1 || left[0] != "new/1700000002.bad.host" {
		t.Errorf("left %v", left)
	}
}

func TestFlushUsage(t *testing.T) {
	src := newMaildir(t)
	for _, args := range [][]string{
		{"flush-maildir", src, "ppp-"},
		{"flush-maildir", filepath.Join(src, "nope"), "ppp-", "127.0.0.1"},
		{"flush-maildir", "--mxps", "example.test", src, "ppp-", "127.0.0.1"},
	} {
		if _, stderr, code := runQbox(t, nil, args...); code != 100 {
			t.Errorf("%v: exit %d, want 100 (%s)", args, code, stderr)
		}
	}
	// The error names the real cause.
	file := filepath.Join(src, "cur", "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		filepath.Join(src, "nope"): "nope does not exist",
		file:                       "file is not a directory",
		filepath.Join(src, "cur"):  "cur is not a maildir (it has no new/ directory)",
	} {
		_, stderr, code := runQbox(t, nil, "flush-maildir", dir, "ppp-", "127.0.0.1")
		if code != 100 || !strings.Contains(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want 100 and one line saying %q", dir, code, stderr, want)
		}
	}
}

// --group: five copies of one message for five recipients cross the link
// once; the same mail arrives.
func TestFlushGroupSendsFewerBytes(t *testing.T) {
	addr, dest := serve(t)
	proxy, err := linksim.Start(addr, linksim.Link{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	body := []byte("Subject: to all\n\n" + strings.Repeat("the same news for everyone\n", 80))
	setup := func() string {
		src := newMaildir(t)
		for i := 0; i < 5; i++ {
			enqueue(t, src, fmt.Sprintf("17000000%02d.g.host", i), "s@example.test", fmt.Sprintf("ppp-u%d@remote.test", i), body, time.Minute)
		}
		enqueue(t, src, "1700000099.o.host", "s@example.test", "ppp-other@remote.test", []byte("Subject: other\n\n"), time.Minute)
		return src
	}
	var up [2]int64
	for i, group := range []bool{false, true} {
		src := setup()
		before := proxy.BytesUp()
		sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Group: group, Connect: hostConnect(proxy.Addr, &qmtp.Client{})})
		if err != nil || sum.Succeeded != 6 {
			t.Fatalf("group=%v: %v %+v", group, err, sum)
		}
		up[i] = proxy.BytesUp() - before
	}
	if up[1] >= up[0] || up[1]*3 > up[0] {
		t.Errorf("bytes on the wire: %d without --group, %d with: want far fewer", up[0], up[1])
	}
	got, count := delivered(t, dest)
	for i := 0; i < 5; i++ {
		rcpt := fmt.Sprintf("u%d@remote.test", i)
		if count[rcpt] != 2 || !bytes.Equal(got[rcpt].body, body) {
			t.Errorf("%s: %d copies (want one per run), body ok %v", rcpt, count[rcpt], bytes.Equal(got[rcpt].body, body))
		}
	}
	if count["other@remote.test"] != 2 {
		t.Errorf("other: %d copies", count["other@remote.test"])
	}
}

func TestMaildirqmtpPersonality(t *testing.T) {
	addr, dest := serve(t)
	src := newMaildir(t)
	fill(t, src, 5, testpeer.Token(t))
	cmd := exec.Command(testpeer.Personality(t, "maildirqmtp"), src, "ppp-", addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got, _ := delivered(t, dest); len(got) != 5 || len(remaining(t, src)) != 0 {
		t.Fatalf("delivered %d, left %v\n%s", len(got), remaining(t, src), out)
	}
	cmd = exec.Command(testpeer.Personality(t, "maildirqmtp"), src, "ppp-")
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != 100 {
		t.Fatalf("two arguments: %v\n%s", err, out)
	}
}

// --mxps: the domain's QMTP exchangers in order; the first refuses the
// connection, so the second gets the mail.
func TestFlushMXPS(t *testing.T) {
	addr, dest := serve(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	// 127.0.0.2 listens on nothing: connection refused, the next one.
	dns := dnstest.Start(t, dnstest.Zone{Records: []string{
		"qmtp.test. 300 IN MX 12801 a.qmtp.test.",
		"qmtp.test. 300 IN MX 12817 b.qmtp.test.",
		"a.qmtp.test. 300 IN A 127.0.0.2",
		"b.qmtp.test. 300 IN A 127.0.0.1",
		"smtponly.test. 300 IN MX 10 mx.smtponly.test.",
		"mx.smtponly.test. 300 IN A 127.0.0.1",
	}})
	src := newMaildir(t)
	fill(t, src, 3, testpeer.Token(t))
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--mxps", "qmtp.test", "--resolver", dns.Addr, "--qmtp-port", port, src, "ppp-")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	// The reply as the server wrote it, not behind a status byte
	// ("said: K..."): the line's first word is the status already.
	if !strings.Contains(stdout, "b.qmtp.test 127.0.0.1:"+port+" said: ") || strings.Contains(stdout, " said: K") {
		t.Errorf("output:\n%s", stdout)
	}
	if got, _ := delivered(t, dest); len(got) != 3 {
		t.Errorf("delivered %d", len(got))
	}
	// An SMTP-only domain now gets its mail over SMTP (MXPS in full, see
	// TestFlushMXPSFallback); a domain that does not exist is a usage error.
	if _, stderr, code := runQbox(t, nil, "flush-maildir", "--mxps", "nosuch.test", "--resolver", dns.Addr, src, "ppp-"); code != 100 {
		t.Errorf("domain that does not exist: exit %d (%s)", code, stderr)
	}
}
