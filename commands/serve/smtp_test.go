package serve_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// startSMTP runs qbox serve with an SMTP listener besides QMQP and QMTP
// and returns the server and the SMTP address.
func startSMTP(t *testing.T, args ...string) (*server, string) {
	t.Helper()
	s := startServe(t, append([]string{"--smtp", "127.0.0.1:0"}, args...)...)
	return s, s.smtp
}

// smtpConv sends a whole pipelined conversation and returns every reply
// line the server wrote until it closed.
func smtpConv(t *testing.T, addr, input string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(input)); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// finalReplies drops the continuation lines (EHLO's).
func finalReplies(lines []string) []string {
	var out []string
	for _, l := range lines {
		if len(l) >= 4 && l[3] == ' ' {
			out = append(out, l)
		}
	}
	return out
}

// SMTP smuggling: only CRLF "." CRLF ends the data. "\n.\n" and
// "\r\n.\n" inside it are text, so one DATA stores one message, never a
// second one made of what follows; bare LFs are stored as line ends.
func TestSMTPSmugglingStoresOneMessage(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	for i, sep := range []string{"\n.\n", "\r\n.\n", "\n.\r\n"} {
		replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
			"MAIL FROM:<s@example.test>\r\nRCPT TO:<first@example.test>\r\nDATA\r\n"+
			"Subject: smuggle "+strconv.Itoa(i)+"\r\n\r\nbody"+sep+
			"MAIL FROM:<forged@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"))
		want := []string{"220 ", "250 ", "250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
		if len(replies) != len(want) {
			t.Fatalf("%q: replies %q", sep, replies)
		}
		for j := range want {
			if !strings.HasPrefix(replies[j], want[j]) {
				t.Fatalf("%q: reply %d %q, want %q", sep, j, replies[j], want[j])
			}
		}
	}
	files := readMaildir(t, dir)
	if len(files) != 3 {
		t.Fatalf("%d files, want 3 (one per DATA)", len(files))
	}
	for _, f := range files {
		if f.recipient != "first@example.test" || f.sender != "s@example.test" ||
			!bytes.Contains(f.message, []byte("MAIL FROM:<forged@example.test>\nRCPT TO:<victim@example.test>\nDATA\nforged\n")) {
			t.Errorf("%s: <%s> -> %s: %q", f.name, f.sender, f.recipient, f.message)
		}
	}
}

// --max-size bounds the message as SIZE counts it: MAIL with a larger
// SIZE= gets 552, and so does a message that outgrows it, after its dot;
// nothing is stored and the session goes on. A client outside the access
// list (QMTP's) is greeted with 554.
func TestSMTPSizeAndAccess(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir, "--max-size", "1K")
	big := strings.Repeat("0123456789abcdef\r\n", 100)
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test> SIZE=5000\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"+big+".\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "552 ", "250 ", "250 ", "354 ", "552 5.3.4 ", "250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q", replies)
	}
	for j := range want {
		if !strings.HasPrefix(replies[j], want[j]) {
			t.Errorf("reply %d %q, want %q", j, replies[j], want[j])
		}
	}
	if n := len(readMaildir(t, dir)); n != 1 {
		t.Errorf("%d files, want 1", n)
	}

	_, refused := startSMTP(t, "--maildir", t.TempDir(), "--allow-qmtp", "10.0.0.0/8")
	if got := smtpConv(t, refused, "EHLO c.test\r\n"); len(got) != 1 || !strings.HasPrefix(got[0], "554 5.7.1 ") {
		t.Errorf("a client outside --allow-qmtp got %q, want a 554 greeting", got)
	}
}

// The connection line counts the refused RCPTs (issue 22): a session whose
// every RCPT was refused shows why no message came.
func TestSMTPConnectionLineCountsRefusedRcpts(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, addr := startSMTP(t, "--maildir", t.TempDir(), "--rcpthosts", rcpthosts)
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\n"+
		"RCPT TO:<a@elsewhere.test>\r\nRCPT TO:<b@elsewhere.test>\r\nRCPT TO:<r@example.test>\r\n"+
		"DATA\r\nx\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "250 ", "553 ", "553 ", "250 ", "354 ", "250 ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q", replies)
	}
	for j := range want {
		if !strings.HasPrefix(replies[j], want[j]) {
			t.Errorf("reply %d %q, want %q", j, replies[j], want[j])
		}
	}
	if !waitLog(t, s, "msg=connection proto=SMTP", "messages=1", "rcpt_refused=2") {
		t.Fatalf("no connection line counting 2 refused RCPTs:\n%s", s.log.String())
	}
}

// kill -9 under SMTP load: every message whose dot got 250 is in new/,
// intact; nothing in new/ is partial.
func TestSMTPCrashKeepsEvery250(t *testing.T) {
	const senders, enough = 12, 150
	dir := t.TempDir()
	s, addr := startSMTP(t, "--maildir", dir)

	var mu sync.Mutex
	acked := map[string]bool{}
	reached := make(chan struct{})
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10*enough; i++ { // bounded, whatever happens
				c, err := gosmtp.Dial(addr)
				if err != nil {
					return // the server is gone
				}
				c.CommandTimeout, c.SubmissionTimeout = 20*time.Second, 20*time.Second
				for j := 0; j < 5; j++ {
					token := fmt.Sprintf("smtp-crash-%d-%d-%d", g, i, j)
					msg := bytes.ReplaceAll(crashMessage(token), []byte("\n"), []byte("\r\n"))
					if c.SendMail("load@example.test", []string{token + "@example.test"}, bytes.NewReader(msg)) != nil {
						break // cut: outcome unknown, not a 250
					}
					mu.Lock()
					acked[token] = true
					if len(acked) == enough {
						close(reached)
					}
					mu.Unlock()
				}
				c.Close()
			}
		}()
	}
	select {
	case <-reached:
	case <-time.After(90 * time.Second):
		t.Fatal("the load never reached its count")
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	stored := map[string]bool{}
	for _, f := range readMaildir(t, dir) {
		token, ok := strings.CutSuffix(f.recipient, "@example.test")
		if !ok || !bytes.Equal(f.message, crashMessage(token)) {
			t.Fatalf("%s in new/ is not an intact message (%d bytes, for %s)", f.name, len(f.message), f.recipient)
		}
		stored[token] = true
	}
	for token := range acked {
		if !stored[token] {
			t.Errorf("%s got 250 but is not in new/", token)
		}
	}
	t.Logf("%d messages got 250 before kill -9, %d in new/", len(acked), len(stored))
}

// The queue program's exit decides the reply to the dot, which comes only
// after it exited: 0 is 250, a temporary failure (71) 451, a permanent
// one (31) 554.
func TestSMTPQueueProgramExitDecides(t *testing.T) {
	work := t.TempDir()
	script := filepath.Join(work, "qq")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\ncat <&1 >/dev/null\nexit $(cat \"$1/code\")\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, addr := startSMTP(t, "--queue-program", script, "--", work)
	for _, c := range []struct{ code, reply string }{{"0", "250 2.0.0 "}, {"71", "451 4.3.0 "}, {"31", "554 5.3.0 "}} {
		if err := os.WriteFile(filepath.Join(work, "code"), []byte(c.code+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\n"+
			"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: qq\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
		if len(replies) != 8 || !strings.HasPrefix(replies[6], c.reply) {
			t.Errorf("exit %s: replies %q, want %q after the dot", c.code, replies, c.reply)
		}
	}
}

// SIGTERM: an SMTP session waiting for a command outside a transaction
// is closed at once (421), one in the middle of its data finishes and
// gets its 250, and serve exits well within --grace.
func TestSMTPGracefulStop(t *testing.T) {
	dir := t.TempDir()
	s, addr := startSMTP(t, "--maildir", dir, "--grace", "60s")
	dial := func(input string, untilPrefix string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte(input))
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", untilPrefix, err)
			}
			if strings.HasPrefix(l, untilPrefix) {
				return c, br
			}
		}
	}
	idle, idleR := dial("EHLO idle.test\r\n", "250 ")
	busy, busyR := dial("EHLO busy.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<busy@example.test>\r\nDATA\r\nSubject: busy\r\n\r\n", "354 ")

	s.cmd.Process.Signal(syscall.SIGTERM)
	l, err := idleR.ReadString('\n')
	if !strings.HasPrefix(l, "421 ") {
		t.Fatalf("idle SMTP client after SIGTERM: %q %v, want 421", l, err)
	}
	if _, err := idleR.ReadByte(); err == nil {
		t.Fatal("idle SMTP connection still open after its 421")
	}
	idle.Close()
	busy.Write([]byte("the rest\r\n.\r\n"))
	if l, err := busyR.ReadString('\n'); !strings.HasPrefix(l, "250 2.0.0 ok ") {
		t.Fatalf("message in flight at SIGTERM: %q %v", l, err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second): // half the grace period
		t.Fatal("serve still running after SIGTERM: an idle SMTP session holds it up")
	}
	if s.err != nil {
		t.Fatalf("serve exited with %v", s.err)
	}
	if files := readMaildir(t, dir); len(files) != 1 || files[0].recipient != "busy@example.test" {
		t.Fatalf("%d files after the stop, want the busy one", len(files))
	}
}

// --timeout bounds each wait for the client: a silent client gets 421
// 4.4.2, and one that stalls in the middle of its data too, with nothing
// stored.
func TestSMTPIdleTimeout(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir, "--timeout", "1s")
	for _, input := range []string{"", "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: half\r\n"} {
		replies := finalReplies(smtpConv(t, addr, input))
		if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], "421 4.4.2 ") {
			t.Errorf("after %q: replies %q, want 421 4.4.2 last", input, replies)
		}
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 0 {
		t.Errorf("%d files stored from a stalled message", n)
	}
}

// CHUNKING, which go-smtp offers: BDAT chunks make one message, stored
// with LF line ends once the LAST chunk is in; a message abandoned by
// RSET between chunks is not stored, and the next BDAT transaction gets
// its own reply (go-smtp would hand it the abandoned one's failure if
// the server did not wait for it: see proto/smtp's Mail).
func TestSMTPBdat(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	first, last := "Subject: bdat\r\n\r\nline one\r\n", ".dot kept\r\nend\r\n"
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\n"+
		"BDAT "+strconv.Itoa(len(first))+"\r\n"+first+"BDAT "+strconv.Itoa(len(last))+" LAST\r\n"+last+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<gone@example.test>\r\nBDAT 5\r\nSubjeRSET\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<next@example.test>\r\nBDAT 14 LAST\r\nSubject: next\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<after@example.test>\r\nDATA\r\nSubject: after\r\n\r\nx\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "250 ", "250 ", "250 2.0.0 ", "250 2.0.0 ok ", // the first message
		"250 ", "250 ", "250 2.0.0 ", "250 ", // the one abandoned, RSET
		"250 ", "250 ", "250 2.0.0 ok ", // the next BDAT transaction
		"250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q", replies)
	}
	for j := range want {
		if !strings.HasPrefix(replies[j], want[j]) {
			t.Errorf("reply %d %q, want %q", j, replies[j], want[j])
		}
	}
	got := map[string][]byte{}
	for _, f := range readMaildir(t, dir) {
		got[f.recipient] = f.message
	}
	if len(got) != 3 || !bytes.HasSuffix(got["next@example.test"], []byte("Subject: next\n")) || !bytes.HasSuffix(got["r@example.test"], []byte("Subject: bdat\n\nline one\n.dot kept\nend\n")) ||
		!bytes.HasSuffix(got["after@example.test"], []byte("Subject: after\n\nx\n")) {
		t.Fatalf("stored %q", got)
	}
}

// Commands pipelined after QUIT, or after the server closed on too many
// errors, are never acted on: no message is stored that no 250 could
// announce, and the session ends (go-smtp alone would go on with the
// commands it had already read).
func TestSMTPNothingAfterClose(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	msg := "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: late\r\n\r\nx\r\n.\r\n"
	for _, c := range []struct{ before, last string }{
		{"EHLO c.test\r\nQUIT\r\n", "221 "},
		{"\r\n\r\n\r\n\r\n", "500 5.5.1 Too many errors"},
	} {
		replies := finalReplies(smtpConv(t, addr, c.before+msg))
		if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], c.last) {
			t.Errorf("%q: replies %q, want %q last", c.before, replies, c.last)
		}
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 0 {
		t.Errorf("%d messages stored after the connection was closed", n)
	}
}

// --max-waiting 0: no waiting room. With the one session held by an idle
// SMTP client, the next is greeted 421 4.3.2 and closed at once (the log
// says why: the room is full, not a wait over). Bad values of the flags
// are usage errors.
func TestSMTPBusyWithoutWaitingRoom(t *testing.T) {
	s, addr := startSMTP(t, "--maildir", t.TempDir(), "--max-conns", "1", "--max-waiting", "0", "--timeout", "10m")
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(time.Minute))
	if line, err := bufio.NewReader(idle).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q %v", line, err)
	}
	lines := smtpConv(t, addr, "")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "421 4.3.2 ") {
		t.Fatalf("the connection beyond --max-conns got %q, want one 421 4.3.2 line", lines)
	}
	if !waitLog(t, s, `msg="connection refused: too many connections" proto=SMTP remote=127.0.0.1 max_conns=1 waiting=0 why="waiting room full"`) {
		t.Errorf("no refusal logged:\n%s", s.log.String())
	}
	bin := testpeer.Binary(t)
	for _, args := range [][]string{{"--max-conns", "0"}, {"--max-waiting", "-1"}} {
		cmd := exec.Command(bin, append([]string{"serve", "--maildir", t.TempDir(), "--qmqp", "", "--qmtp", "127.0.0.1:0"}, args...)...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 100 || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), args[0]) {
			t.Errorf("serve %v: %v, want exit 100 and one line naming the flag\n%s", args, err, out)
		}
	}
}
