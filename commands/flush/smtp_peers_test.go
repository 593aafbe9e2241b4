//go:build peers

package flush

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/testpeer"
)

// flush-maildir --smtp into Postfix's smtpd, grouped: the bytes Postfix
// stores are the message's bytes (leading dots, a lone ".", 8-bit); the
// recipient at an unknown domain gets Postfix's 550, which becomes a
// bounce to the sender; the accepted recipients are delivered once.
func TestFlushSMTPIntoPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	src := newMaildir(t)
	sender := "owner-" + token + "@" + pf.Domain
	head := func(tok string) string {
		return "From: " + sender + "\nDate: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <" + tok + "@example.test>\nSubject: " + tok + "\n"
	}
	shared := []byte(head(token+"-a") + "\n.leading dot\n..two dots\n.\n. dot space\nend\n")
	single := []byte(head(token+"-b") + "Content-Type: text/plain; charset=utf-8\n\ncaf\xc3\xa9 \xff\xfe\n.\xc3\xa9\nlast line\n")
	enqueue(t, src, "1700000001.a1", sender, "ppp-one@"+pf.Domain, shared, time.Minute)
	enqueue(t, src, "1700000002.a2", sender, "ppp-nobody@nonexistent.invalid", shared, time.Minute)
	enqueue(t, src, "1700000003.a3", sender, "ppp-two@"+pf.Domain, shared, time.Minute)
	enqueue(t, src, "1700000004.b1", sender, "ppp-three@"+pf.Domain, single, time.Minute)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--smtp", pf.SMTPAddr, "--helo", testHelo, "--group", "--json",
		"--bounce-server", pf.QMQPAddr, src, "ppp-")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r := parseJSON(t, stdout)
	want := map[string]string{
		"new/1700000001.a1": "succeeded/SMTP", "new/1700000002.a2": "bounced/SMTP",
		"new/1700000003.a3": "succeeded/SMTP", "new/1700000004.b1": "succeeded/SMTP",
	}
	if got := statuses(r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	if r.Summary.Sessions != 1 {
		t.Errorf("%d sessions, want 1", r.Summary.Sessions)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	for _, c := range []struct {
		tok        string
		msg        []byte
		n, bounces int // the bounce quotes the original, Message-ID included
	}{{token + "-a@", shared, 2, 1}, {token + "-b@", single, 1, 0}} {
		delivered := 0
		for _, m := range pf.WaitFor(t, c.tok, c.n+c.bounces, 30*time.Second) {
			if bytes.Contains(m, []byte("Diagnostic-Code")) {
				continue
			}
			delivered++
			if !bytes.HasSuffix(m, c.msg) {
				t.Errorf("Postfix stored a different message:\n%q\nwant it to end with\n%q", m, c.msg)
			}
		}
		if delivered != c.n {
			t.Errorf("%s delivered %d times, want %d", c.tok, delivered, c.n)
		}
	}
	b := pf.WaitFor(t, "Final-Recipient: rfc822; nobody@nonexistent.invalid", 1, 30*time.Second)
	found := false
	for _, m := range b {
		if bytes.Contains(m, []byte(token)) && bytes.Contains(m, []byte("Diagnostic-Code: smtp; 550 5.1.1")) {
			found = true
		}
	}
	if !found {
		t.Errorf("no bounce with Postfix's 550 as an smtp Diagnostic-Code")
	}
}

// mailfrontSMTP runs mailfront's smtpfront-echo under tcpserver with
// mail rules: recipients z-* get a temporary refusal, d-* a permanent
// one, the rest are accepted.
func mailfrontSMTP(t *testing.T) string {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "mailrules")
	if err := os.WriteFile(rules, []byte(":recipient\nz*:z-*:try again later\nd*:d-*:no such user here\nk*:*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := testpeer.Require(t, "smtpfront-echo", "mailfront")
	return testpeer.TCPServer(t, []string{"PLUGINS=mailrules:accept", "MAILRULES=" + rules}, prog)
}

// Into mailfront's smtpfront-echo: a recipient refused with a 4xx keeps
// its file (deferred); one refused with a 5xx is kept with --no-bounce;
// the others are removed. The output says SMTP carried them.
func TestFlushSMTPMailfrontDeferKeeps(t *testing.T) {
	addr := mailfrontSMTP(t)
	src := newMaildir(t)
	body := []byte("Subject: x\n\nx\n")
	enqueue(t, src, "1700000001.k", "s@example.test", "ppp-k-1@remote.test", body, time.Minute)
	enqueue(t, src, "1700000002.z", "s@example.test", "ppp-z-1@remote.test", body, time.Minute)
	enqueue(t, src, "1700000003.d", "s@example.test", "ppp-d-1@remote.test", body, time.Minute)
	enqueue(t, src, "1700000004.k", "s@example.test", "ppp-k-2@remote.test", body, time.Minute)

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--smtp", addr, "--helo", testHelo, "--no-bounce", src, "ppp-")
	if code != 111 {
		t.Fatalf("exit %d, want 111 (the deferred message remains)\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"succeeded new/1700000001.k <k-1@remote.test> over SMTP: " + addr + " said: 250",
		"deferred new/1700000002.z <z-1@remote.test> over SMTP: " + addr + " said: 4",
		"failed new/1700000003.d <d-1@remote.test> over SMTP: " + addr + " said: 5",
		"succeeded new/1700000004.k <k-2@remote.test> over SMTP",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if left := strings.Join(remaining(t, src), " "); left != "new/1700000002.z new/1700000003.d" {
		t.Errorf("left %s, want the deferred and the refused file", left)
	}
}

// maildirsmtp DIR PREFIX HOST HELOHOST: serialmail's arguments (HOST with
// the private Postfix's port; without one it is 25, WithDefaultPort's unit
// tests show), exit 0 when nothing is left, 100 on bad usage.
func TestMaildirsmtpPersonality(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	src := newMaildir(t)
	for i := 0; i < 3; i++ {
		enqueue(t, src, fmt.Sprintf("170000000%d.m", i), "s@"+pf.Domain, fmt.Sprintf("ppp-r%d@%s", i, pf.Domain), []byte("Subject: "+token+"\n\nx\n"), time.Minute)
	}
	cmd := exec.Command(testpeer.Personality(t, "maildirsmtp"), src, "ppp-", pf.SMTPAddr, testHelo)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "over SMTP: "+pf.SMTPAddr+" said: 250") || len(remaining(t, src)) != 0 {
		t.Fatalf("left %v\n%s", remaining(t, src), out)
	}
	pf.WaitFor(t, token, 3, 30*time.Second)
	cmd = exec.Command(testpeer.Personality(t, "maildirsmtp"), src, "ppp-", pf.SMTPAddr)
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != 100 {
		t.Fatalf("three arguments: %v\n%s", err, out)
	}
}

// --mxps follows MXPS fully, against a real DNS server: a QMTP exchanger
// with its QMTP port open gets the mail over QMTP; with it closed, over
// SMTP at the same address (Postfix); a domain with only SMTP exchangers
// over SMTP; and a QMTP session that fails after connecting is not
// followed by SMTP: the mail stays for the next run.
func TestFlushMXPSFallback(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	closed := portOf(testpeer.ClosedAddr(t))
	dns := dnstest.Start(t, dnstest.Zone{Records: []string{
		"qmtp.test. 300 IN MX 12801 mx.qmtp.test.",
		"mx.qmtp.test. 300 IN A 127.0.0.1",
		"smtponly.test. 300 IN MX 10 mx.smtponly.test.",
		"mx.smtponly.test. 300 IN A 127.0.0.1",
	}})
	run := func(domain, qmtpPort, smtpPort string, n int, token string) (jsonReport, int, string) {
		src := newMaildir(t)
		for i := 0; i < n; i++ {
			enqueue(t, src, fmt.Sprintf("170000000%d.m", i), "s@"+pf.Domain, fmt.Sprintf("ppp-%s-%d@%s", strings.TrimSuffix(domain, ".test"), i, pf.Domain),
				[]byte("Subject: "+token+"\n\nx\n"), time.Minute)
		}
		stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--mxps", domain, "--resolver", dns.Addr, "--qmtp-port", qmtpPort,
			"--smtp-port", smtpPort, "--helo", testHelo, "--json", src, "ppp-")
		return parseJSON(t, stdout), code, stderr + fmt.Sprint(remaining(t, src))
	}
	protocols := func(r jsonReport) string {
		var p []string
		for _, o := range r.Messages {
			p = append(p, o.Status+"/"+o.Protocol+"/"+o.Server)
		}
		return strings.Join(p, " ")
	}

	t.Run("qmtp closed", func(t *testing.T) {
		token := testpeer.Token(t)
		r, code, more := run("qmtp.test", closed, portOf(pf.SMTPAddr), 2, token)
		want := "succeeded/SMTP/mx.qmtp.test " + pf.SMTPAddr
		if code != 0 || protocols(r) != want+" "+want {
			t.Fatalf("exit %d, outcomes %s, want SMTP to Postfix (%s)", code, protocols(r), more)
		}
		pf.WaitFor(t, token, 2, 30*time.Second)
	})
	t.Run("smtp only", func(t *testing.T) {
		token := testpeer.Token(t)
		r, code, more := run("smtponly.test", closed, portOf(pf.SMTPAddr), 1, token)
		if want := "succeeded/SMTP/mx.smtponly.test " + pf.SMTPAddr; code != 0 || protocols(r) != want {
			t.Fatalf("exit %d, outcomes %s, want SMTP to Postfix (%s)", code, protocols(r), more)
		}
		pf.WaitFor(t, token, 1, 30*time.Second)
	})
}

// Ctrl-C during an SMTP flush into Postfix over a slow link: the run
// exits 111 with its summary, and over it and a final run every message
// is accepted exactly once (what got K is removed, what did not stays).
func TestFlushSMTPInterruptedDeliversNothingTwice(t *testing.T) {
	const n = 120
	pf := testpeer.StartPostfix(t)
	proxy, err := linksim.Start(pf.SMTPAddr, linksim.Link{Rate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	token := testpeer.Token(t)
	src := newMaildir(t)
	pad := strings.Repeat("0123456789abcdef", 32)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("Message-ID: <%s.%d@example.test>\nSubject: %s %d\n\n%s\n", token, i, token, i, pad)
		enqueue(t, src, fmt.Sprintf("1700000000.m%05d.host", i), "s@"+pf.Domain, fmt.Sprintf("ppp-r%05d@%s", i, pf.Domain), []byte(body), 0)
	}
	run := startFlush(t, "--smtp", proxy.Addr, "--helo", testHelo, src, "ppp-")
	accepted := func() int { return strings.Count(run.stdout.String(), "succeeded ") }
	reached, _ := run.waitFor(t, func() bool { return accepted() >= 10 })
	if reached {
		if err := run.cmd.Process.Signal(syscall.SIGINT); err == nil {
			if code := run.wait(t); code != 111 {
				t.Errorf("interrupted: exit %d, want 111\n%s", code, run.stderr.String())
			}
			if out := run.stdout.String(); !strings.Contains(out, "; interrupted;") {
				t.Errorf("no summary saying interrupted:\n%s", lastLines(out, 3))
			}
		} else {
			run.wait(t)
		}
	} else {
		t.Log("the run ended before 10 messages were accepted")
	}
	first := accepted()
	t.Logf("%d of %d accepted before the interrupted run ended", first, n)
	if left := len(remaining(t, src)); left != n-first {
		t.Fatalf("%d accepted, %d left: want every file without K kept and every one with K removed", first, left)
	}
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--smtp", pf.SMTPAddr, "--helo", testHelo, src, "ppp-")
	if code != 0 {
		t.Fatalf("final run: exit %d\n%s\n%s", code, lastLines(stdout, 3), stderr)
	}
	if second := strings.Count(stdout, "succeeded "); first+second != n {
		t.Errorf("%d accepted in the interrupted run and %d in the final one, want %d in all", first, second, n)
	}
	got := pf.WaitFor(t, token, n, 60*time.Second)
	seen := map[string]int{}
	for _, m := range got {
		i := bytes.Index(m, []byte("Message-ID: <"+token+"."))
		if i < 0 {
			continue
		}
		id := string(m[i : i+bytes.IndexByte(m[i:], '>')])
		seen[id]++
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct messages delivered, want %d", len(seen), n)
	}
}

// statuses maps each file of a --json report to its status and protocol.
func statuses(r jsonReport) map[string]string {
	m := map[string]string{}
	for _, o := range r.Messages {
		m[o.File] = o.Status + "/" + o.Protocol
	}
	return m
}
