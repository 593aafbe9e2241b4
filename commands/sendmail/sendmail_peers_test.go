//go:build peers

package sendmail

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

func wantHeader(t *testing.T, msg []byte, name string, want ...string) {
	t.Helper()
	got := header(msg, name)
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("%s: got %q, want %q\nmessage:\n%s", name, got, want, msg)
	}
}

func wantOneMatching(t *testing.T, msg []byte, name, pattern string) {
	t.Helper()
	got := header(msg, name)
	if len(got) != 1 || !regexp.MustCompile(pattern).MatchString(got[0]) {
		t.Errorf("%s: got %q, want one matching %s\nmessage:\n%s", name, got, pattern, msg)
	}
}

const qmailDate = `^\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000$`

// cronie: sendmail -FCronDaemon -i -odi -oem -oi -t -f root, with the
// header cron writes. Recipients come from To; the bare "root" gets the
// default host; Date and Message-ID are added; cron's own From stays.
func TestCronCommandLine(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, pf.QMQPAddr)
	tok := testpeer.Token(t)
	msg := "From: \"(Cron Daemon)\" <root>\n" +
		"To: root\n" +
		"Subject: Cron <root@host> echo " + tok + "\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=UTF-8\n" +
		"Content-Transfer-Encoding: 8bit\n" +
		"X-Cron-Env: <SHELL=/bin/sh>\n" +
		"X-Cron-Env: <HOME=/root>\n" +
		"\n" + tok + "\n"
	code, _, stderr := run(t, sendmail, env, msg, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
	wantHeader(t, got, "Return-Path", "<root@example.test>")
	wantHeader(t, got, "Delivered-To", "root@example.test")
	// Header addresses are left as written; Postfix's cleanup then
	// qualifies them with its own name.
	wantOneMatching(t, got, "From", `^"\(Cron Daemon\)" <root(@[a-z.-]+)?>$`)
	wantOneMatching(t, got, "To", `^root(@[a-z.-]+)?$`)
	wantHeader(t, got, "X-Cron-Env", "<SHELL=/bin/sh>", "<HOME=/root>")
	wantOneMatching(t, got, "Date", qmailDate)
	wantOneMatching(t, got, "Message-ID", `^<\d{14}\.\d+\.qmail@idhost\.example\.test>$`)
	if string(testpeer.Body(got)) != tok+"\n" {
		t.Errorf("body %q", testpeer.Body(got))
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled though the server was up", n)
	}
}

// PHP's mail() runs sendmail -t -i and writes LF headers, CRLF extra
// headers and a CRLF body: everything arrives with LF, From is added from
// the user, the envelope sender is user@defaulthost.
func TestPHPMailCommandLine(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, _ := mailEnv(t, pf.QMQPAddr, "USER=www-data")
	tok := testpeer.Token(t)
	msg := "To: php-" + tok + "@example.test\n" +
		"Subject: " + tok + "\n" +
		"X-PHP-Originating-Script: 33:contact.php\r\n" +
		"Reply-To: webmaster@example.test\r\n" +
		"\n" +
		"Hello\r\nWorld\r\n"
	code, _, stderr := run(t, sendmail, env, msg, "-t", "-i")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
	if bytes.Contains(got, []byte("\r")) {
		t.Errorf("CR left in the delivered message:\n%q", got)
	}
	wantHeader(t, got, "Return-Path", "<www-data@example.test>")
	wantHeader(t, got, "Delivered-To", "php-"+tok+"@example.test")
	wantHeader(t, got, "From", "www-data@example.test")
	wantHeader(t, got, "X-PHP-Originating-Script", "33:contact.php")
	wantHeader(t, got, "Reply-To", "webmaster@example.test")
	wantOneMatching(t, got, "Date", qmailDate)
	if string(testpeer.Body(got)) != "Hello\nWorld\n" {
		t.Errorf("body %q", testpeer.Body(got))
	}
}

// git send-email runs sendmail -i addr... with a complete header: the
// arguments are the recipients (Cc in the header is not added twice),
// nothing in the header is added or changed, the patch body is intact.
func TestGitSendEmailCommandLine(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, _ := mailEnv(t, pf.QMQPAddr)
	tok := testpeer.Token(t)
	msg := "From: Dev Eloper <dev@example.test>\n" +
		"To: alice-" + tok + "@example.test\n" +
		"Cc: bob-" + tok + "@example.test\n" +
		"Subject: [PATCH] fix " + tok + "\n" +
		"Date: Mon, 17 Nov 2025 10:00:00 +0100\n" +
		"Message-Id: <20251117090000.1-1-dev@example.test>\n" +
		"X-Mailer: git-send-email 2.39.5\n" +
		"MIME-Version: 1.0\n" +
		"Content-Transfer-Encoding: 8bit\n" +
		"\n" +
		"---\n x | 2 +-\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new \xc3\xa9\n.\n..\n"
	code, _, stderr := run(t, sendmail, env, msg, "-i", "alice-"+tok+"@example.test", "bob-"+tok+"@example.test")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, tok, 2, 30*time.Second)
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want 2", len(got))
	}
	var to []string
	for _, m := range got {
		to = append(to, header(m, "Delivered-To")...)
		wantHeader(t, m, "Date", "Mon, 17 Nov 2025 10:00:00 +0100")
		wantHeader(t, m, "Message-Id", "<20251117090000.1-1-dev@example.test>")
		wantHeader(t, m, "From", "Dev Eloper <dev@example.test>")
		wantHeader(t, m, "Return-Path", "<tester@example.test>")
		if !bytes.HasSuffix(m, []byte("+new \xc3\xa9\n.\n..\n")) {
			t.Errorf("patch body changed:\n%q", testpeer.Body(m))
		}
	}
	if strings.Join(to, " ") != "alice-"+tok+"@example.test bob-"+tok+"@example.test" &&
		strings.Join(to, " ") != "bob-"+tok+"@example.test alice-"+tok+"@example.test" {
		t.Errorf("delivered to %q", to)
	}
}

// mutt: sendmail -oem -oi -N failure,delay -- addr. -N (DSN) must not
// be fatal; Bcc is removed and, without -t, not a recipient.
func TestMuttCommandLine(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, _ := mailEnv(t, pf.QMQPAddr)
	tok := testpeer.Token(t)
	msg := "Date: Mon, 17 Nov 2025 10:00:00 +0100\n" +
		"From: Carol Sender <carol@example.test>\n" +
		"To: dave-" + tok + "@example.test\n" +
		"Bcc: hidden-" + tok + "@example.test\n" +
		"Subject: " + tok + "\n" +
		"Message-ID: <mutt." + tok + "@example.test>\n" +
		"User-Agent: Mutt/2.2.9\n" +
		"\n" +
		"hi dave\n"
	code, _, stderr := run(t, sendmail, env, msg, "-oem", "-oi", "-N", "failure,delay", "--", "dave-"+tok+"@example.test")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	pf.WaitFor(t, tok, 1, 30*time.Second)
	pf.WaitDrained(t, tok, 60*time.Second) // a Bcc delivery would be done by now
	got := pf.WaitFor(t, tok, 1, time.Second)
	if len(got) != 1 {
		t.Fatalf("%d deliveries, want 1 (the Bcc address is no recipient without -t)", len(got))
	}
	wantHeader(t, got[0], "Delivered-To", "dave-"+tok+"@example.test")
	wantHeader(t, got[0], "Bcc")
	wantHeader(t, got[0], "From", "Carol Sender <carol@example.test>")
	wantHeader(t, got[0], "Message-ID", "<mutt."+tok+"@example.test>")
}

// -F is kept with -f (netqmail loses it); -f '<>' is the null sender.
func TestFullNameKeptWithSender(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, _ := mailEnv(t, pf.QMQPAddr)
	tok := testpeer.Token(t)
	code, _, stderr := run(t, sendmail, env, "Subject: "+tok+"\n\nx\n", "-F", "Backup Robot", "-f", "robot@example.test", "ops-"+tok+"@example.test")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
	wantHeader(t, got, "From", `"Backup Robot" <robot@example.test>`)
	wantHeader(t, got, "Return-Path", "<robot@example.test>")

	tok2 := testpeer.Token(t) + "-null"
	code, _, stderr = run(t, sendmail, env, "Subject: "+tok2+"\n\nx\n", "-f", "<>", "ops-"+tok+"@example.test")
	if code != 0 || stderr != "" {
		t.Fatalf("null sender: exit %d, stderr %q", code, stderr)
	}
	got = pf.WaitFor(t, tok2, 1, 30*time.Second)[0]
	wantHeader(t, got, "Return-Path", "<>")
}

// Exit codes: never a silent loss, sysexits for sendmail, 0/100/111 for
// qmail-inject, 75/111 only when even the spool failed.
func TestExitCodes(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	inject := testpeer.Personality(t, "qmail-inject")
	mailq := testpeer.Personality(t, "mailq")
	env, spoolDir := mailEnv(t, pf.QMQPAddr)
	down, _ := mailEnv(t, testpeer.ClosedAddr(t))
	down = append(down, "QBOX_SPOOL=/proc/qbox-cannot-exist/spool")
	var loop strings.Builder
	for i := 0; i < 60; i++ {
		loop.WriteString("Received: from a by b; Mon, 17 Nov 2025 10:00:00 +0000\n")
	}
	looping := loop.String() + "Subject: loop\n\nx\n"

	tests := []struct {
		name      string
		prog      string
		env       []string
		stdin     string
		args      []string
		code      int
		stderrHas string
	}{
		{"sendmail no recipients", sendmail, env, "Subject: x\n\nx\n", nil, 64, "no recipients"},
		{"sendmail -t no recipients in header", sendmail, env, "Subject: x\n\nx\n", []string{"-t"}, 65, "no recipients"},
		{"sendmail bad recipient argument", sendmail, env, "\n", []string{"a(b"}, 64, "unparsable address"},
		{"sendmail bad recipient in the header", sendmail, env, "Return-Path: <a(b>\n\nx\n", []string{"x@example.test"}, 65, "unparsable address"},
		{"sendmail D", sendmail, env, looping, []string{"x@example.test"}, 69, "hops"},
		{"sendmail unsupported mode", sendmail, env, "", []string{"-bt"}, 64, "not supported"},
		{"sendmail unknown option warns and sends", sendmail, env, "Subject: x\n\nx\n", []string{"-Y", "warned@example.test"}, 0, "unknown option -Y"},
		{"sendmail spool unusable", sendmail, down, "Subject: x\n\nx\n", []string{"x@example.test"}, 75, "could not be queued"},
		{"sendmail -bi", sendmail, env, "", []string{"-bi"}, 0, ""},
		{"qmail-inject no recipients", inject, env, "Subject: x\n\nx\n", nil, 100, "no recipients"},
		{"qmail-inject bad option", inject, env, "", []string{"-t"}, 100, "unknown option"},
		{"qmail-inject D", inject, env, looping, []string{"x@example.test"}, 100, "hops"},
		{"qmail-inject spool unusable", inject, down, "Subject: x\n\nx\n", []string{"x@example.test"}, 111, "could not be queued"},
		{"qmail-inject header recipients", inject, env, "To: hdr@example.test\n\nx\n", nil, 0, ""},
		{"mailq", mailq, env, "", nil, 0, ""},
	}
	for _, tc := range tests {
		code, _, stderr := run(t, tc.prog, tc.env, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.stderrHas) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d, stderr containing %q", tc.name, code, stderr, tc.code, tc.stderrHas)
		}
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled: refused and permanent failures must not be queued", n)
	}
}

// Server down: 100 messages all exit 0 and sit in the spool; mailq lists
// them; then, server up, two concurrent sendmail -q runs deliver each
// exactly once and empty the spool.
func TestSpoolWhileDownThenFlush(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	mailq := testpeer.Personality(t, "mailq")
	down, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	tok := testpeer.Token(t)
	// The token in the sender finds the messages in Postfix's queue too.
	sender := "sender-" + tok + "@example.test"
	const n = 100
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("To: spooled-%d@example.test\nSubject: %s #%d#\n\nmessage %d\n", i%3, tok, i, i)
		code, _, stderr := run(t, sendmail, down, msg, "-t", "-i", "-v", "-f", sender)
		if code != 0 {
			t.Fatalf("message %d: exit %d, stderr %q", i, code, stderr)
		}
		if !strings.Contains(stderr, "queued in "+spoolDir) {
			t.Fatalf("message %d: no note that it was queued: %q", i, stderr)
		}
	}
	if got := queuedFiles(t, spoolDir); got != n {
		t.Fatalf("%d files in the spool, want %d", got, n)
	}
	st, err := os.Stat(spoolDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("spool mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
	code, out, _ := run(t, mailq, down, "")
	if code != 0 || strings.Count(out, " "+sender+"\n") != n || strings.Count(out, " spooled-") != n || !strings.Contains(out, "refused") {
		t.Fatalf("mailq exit %d:\n%s", code, out)
	}
	code, out, _ = run(t, sendmail, down, "", "-bp")
	if code != 0 || strings.Count(out, " "+sender+"\n") != n || !strings.Contains(out, fmt.Sprintf("in %d Requests", n)) {
		t.Fatalf("sendmail -bp exit %d:\n%s", code, out)
	}

	// Still down: -q keeps everything and says nothing (cron would mail
	// it), exit 75.
	code, _, stderr := run(t, sendmail, down, "", "-q")
	if code != 75 || stderr != "" || queuedFiles(t, spoolDir) != n {
		t.Fatalf("flush while down: exit %d, stderr %q, %d queued", code, stderr, queuedFiles(t, spoolDir))
	}

	up, _ := mailEnv(t, pf.QMQPAddr, "QBOX_SPOOL="+spoolDir)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	stderrs := make([]string, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, stderrs[i] = run(t, sendmail, up, "", "-q")
		}()
	}
	wg.Wait()
	// One run delivers; a run that found the spool locked says so.
	for i := range codes {
		if codes[i] != 0 && !(codes[i] == 75 && strings.Contains(stderrs[i], "another run")) {
			t.Errorf("flush %d: exit %d, stderr %q", i, codes[i], stderrs[i])
		}
	}
	if got := queuedFiles(t, spoolDir); got != 0 {
		t.Fatalf("%d files left after flushing", got)
	}
	pf.WaitFor(t, tok, n, 60*time.Second)
	pf.WaitDrained(t, tok, 60*time.Second) // a duplicate would be delivered by now
	got := pf.WaitFor(t, tok, n, time.Second)
	seen := map[string]int{}
	re := regexp.MustCompile(`#(\d+)#`)
	for _, m := range got {
		if id := re.FindSubmatch(m); id != nil {
			seen[string(id[1])]++
		}
	}
	for i := 0; i < n; i++ {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Errorf("message %d delivered %d times", i, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d deliveries, want %d", len(got), n)
	}
	if code, out, _ := run(t, mailq, up, ""); code != 0 || !strings.Contains(out, "empty") {
		t.Errorf("mailq after flush: exit %d:\n%s", code, out)
	}
}

// One message to several recipients is spooled as one file each, and
// goes back as one QMQP message (Postfix gives every recipient the same
// queue id).
func TestFlushRegroupsRecipients(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	down, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	tok := testpeer.Token(t)
	code, _, _ := run(t, sendmail, down, "Subject: "+tok+"\n\nx\n", "a1@example.test", "a2@example.test", "a3@example.test")
	if code != 0 || queuedFiles(t, spoolDir) != 3 {
		t.Fatalf("exit %d, %d queued", code, queuedFiles(t, spoolDir))
	}
	up, _ := mailEnv(t, pf.QMQPAddr, "QBOX_SPOOL="+spoolDir)
	if code, _, stderr := run(t, sendmail, up, "", "-q", "-v"); code != 0 || strings.Count(stderr, "spool: delivered") != 1 {
		t.Fatalf("flush: exit %d, stderr %q (want one delivery of 3 recipients)", code, stderr)
	}
	ids := map[string]bool{}
	for _, m := range pf.WaitFor(t, tok, 3, 30*time.Second) {
		id := regexp.MustCompile(`with QMQP\s+id ([0-9A-F]+)`).FindSubmatch(m)
		if id == nil {
			t.Fatalf("no queue id in %s", m)
		}
		ids[string(id[1])] = true
	}
	if len(ids) != 1 {
		t.Errorf("3 recipients arrived as %d messages, want 1", len(ids))
	}
}

// A D reply during the flush: the message is bounced to its sender (the
// bounce is delivered by Postfix) and removed. Postfix's qmqpd answers D
// to a message with more than 50 Received lines.
func TestFlushBouncesPermanentFailure(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	down, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	tok := testpeer.Token(t)
	var msg strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&msg, "Received: from hop%d by hop%d; Mon, 17 Nov 2025 10:00:00 +0000\n", i, i+1)
	}
	msg.WriteString("Subject: looping " + tok + "\n\nlooping\n")
	sender := "owner-" + tok + "@example.test"
	if code, _, stderr := run(t, sendmail, down, msg.String(), "-f", sender, "loop@example.test"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	up, _ := mailEnv(t, pf.QMQPAddr, "QBOX_SPOOL="+spoolDir)
	code, _, stderr := run(t, sendmail, up, "", "-q")
	if code != 0 || stderr != "" {
		t.Fatalf("flush: exit %d, stderr %q", code, stderr)
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Fatalf("%d files left after the bounce", n)
	}
	var bounce []byte
	for _, m := range pf.WaitFor(t, tok, 1, 30*time.Second) {
		if bytes.Contains(m, []byte("Delivered-To: "+sender)) {
			bounce = m
		}
	}
	if bounce == nil {
		t.Fatal("no bounce delivered to the sender")
	}
	wantHeader(t, bounce, "Return-Path", "<>")
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; loop@example.test", "Action: failed", "too many hops", "Subject: looping " + tok} {
		if !bytes.Contains(bounce, []byte(want)) {
			t.Errorf("bounce lacks %q:\n%s", want, bounce)
		}
	}
}

// sendmail -bs driven by swaks: one message sent over QMQP (250), one
// spooled while the relay is down (250, in the spool), one refused with
// D (554, not spooled).
func TestSMTPSessionWithSwaks(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	swaks := testpeer.Require(t, "swaks", "swaks")
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, pf.QMQPAddr)
	tok := testpeer.Token(t)

	swak := func(env []string, args ...string) (int, string) {
		cmd := exec.Command(swaks, append([]string{"--pipe", sendmail + " -bs", "--from", "bs-" + tok + "@example.test"}, args...)...)
		cmd.Env = cleanEnv(env)
		out, err := cmd.CombinedOutput()
		return testpeer.ExitCode(t, err), string(out)
	}

	data := filepath.Join(t.TempDir(), "msg")
	os.WriteFile(data, []byte("Subject: bs "+tok+"\nTo: x\n\n.leading dot\n..two dots\nend\n"), 0o644)
	code, out := swak(env, "--to", "bs1-"+tok+"@example.test,bs2-"+tok+"@example.test", "--data", data)
	if code != 0 || !strings.Contains(out, "250 2.0.0 Ok: sent over QMQP") {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	got := pf.WaitFor(t, "bs "+tok, 2, 30*time.Second)
	for _, m := range got {
		wantHeader(t, m, "Return-Path", "<bs-"+tok+"@example.test>")
		wantOneMatching(t, m, "Date", qmailDate)
		// swaks ends DATA with its own CRLF before the dot, hence the
		// extra empty line.
		if !bytes.HasSuffix(m, []byte("\n\n.leading dot\n..two dots\nend\n\n")) {
			t.Errorf("dot-stuffing not undone exactly:\n%q", m)
		}
	}

	down, _ := mailEnv(t, testpeer.ClosedAddr(t), "QBOX_SPOOL="+spoolDir)
	code, out = swak(down, "--to", "later-"+tok+"@example.test", "--header", "Subject: later "+tok)
	if code != 0 || !strings.Contains(out, "250 2.0.0 Ok: queued in the local spool") {
		t.Fatalf("swaks while down exit %d:\n%s", code, out)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files spooled, want 1", n)
	}

	var loop strings.Builder
	for i := 0; i < 60; i++ {
		loop.WriteString("Received: from a by b; Mon, 17 Nov 2025 10:00:00 +0000\n")
	}
	loop.WriteString("Subject: loop\n\nx\n")
	os.WriteFile(data, []byte(loop.String()), 0o644)
	code, out = swak(env, "--to", "loop-"+tok+"@example.test", "--data", data)
	if code == 0 || !strings.Contains(out, "554 5.3.0 rejected") {
		t.Fatalf("swaks with a D: exit %d:\n%s", code, out)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files spooled after a D, want still 1", n)
	}
}

// The next message that goes through starts a background sendmail -q:
// mail queued while the relay was down is delivered without a cron entry.
func TestSuccessDrainsSpool(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	down, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	tok := testpeer.Token(t)
	if code, _, _ := run(t, sendmail, down, "Subject: first "+tok+"\n\nx\n", "waiting@example.test"); code != 0 || queuedFiles(t, spoolDir) != 1 {
		t.Fatalf("exit %d, %d queued", code, queuedFiles(t, spoolDir))
	}
	up, _ := mailEnv(t, pf.QMQPAddr, "QBOX_SPOOL="+spoolDir)
	if code, _, stderr := run(t, sendmail, up, "Subject: second "+tok+"\n\nx\n", "now@example.test"); code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	pf.WaitFor(t, "Subject: first "+tok, 1, 30*time.Second)
	deadline := time.Now().Add(60 * time.Second) // a guard, not a measure
	// The detached flush is done with the spool once it has recorded its
	// delivery stamp (after its run, lock released): only then may the
	// test's TempDir go, or its cleanup races the child's last writes.
	sp := &spool.Spool{Dir: spoolDir}
	for {
		stamp, err := sp.LastStamp(spool.StampDelivery)
		if err != nil {
			t.Fatal(err)
		}
		if queuedFiles(t, spoolDir) == 0 && !stamp.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spool not emptied by the background flush")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
