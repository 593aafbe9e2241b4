package qmailremote

// The qmail-rspawn harness: the personality runs as qmail-rspawn runs
// qmail-remote (a symlink named qmail-remote, the working directory
// <home>/queue/mess, an environment without $QMAILHOME, the arguments,
// the message as a regular file on fd 0, the reports read from fd 1, the
// exit status checked), and its output is parsed as qmail-rspawn parses
// it, against real peers: Postfix's smtpd, mailfront's smtpfront-echo,
// `qbox serve`, and a real DNS server in-process. rspawn (below) is
// qmail-rspawn's own run: one recipient, fd 2 joined to fd 1, any exit
// but 0 "Unable to run qmail-remote".

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

const testHelo = "qbox-test-client.example"

// run is one qmail-remote run as qmail-rspawn makes it.
type run struct {
	home string   // qmail's home: the run's working directory is home/queue/mess
	env  []string // the environment besides PATH (no $QMAILHOME unless given here)
}

func newRun(t *testing.T, env ...string) *run {
	t.Helper()
	home := t.TempDir()
	for _, d := range []string{"control", "queue/mess/0"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &run{home: home, env: env}
	r.control(t, "helohost", testHelo+"\n")
	return r
}

func (r *run) control(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.home, "control", name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// result is qmail-remote's output, parsed as qmail-rspawn reads it.
type result struct {
	raw        []byte
	recipients []string // letter + text, in order
	message    string   // letter + text
}

// remote runs qmail-remote with msg on fd 0 (a regular file, as
// qmail-rspawn gives it) and parses the reports.
func (r *run) remote(t *testing.T, msg []byte, args ...string) result {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mess")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	return r.remoteFrom(t, in, len(args)-2, args...)
}

func (r *run) remoteFrom(t *testing.T, stdin any, nrecip int, args ...string) result {
	t.Helper()
	cmd := exec.Command(testpeer.Personality(t, "qmail-remote"), args...)
	cmd.Dir = filepath.Join(r.home, "queue", "mess")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, r.env...)
	switch in := stdin.(type) {
	case *os.File:
		cmd.Stdin = in
	case []byte:
		cmd.Stdin = bytes.NewReader(in) // a pipe
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if code := testpeer.ExitCode(t, cmd.Run()); code != 0 {
		t.Fatalf("qmail-remote exited %d (qmail-rspawn: \"Unable to run qmail-remote\"); stderr %q", code, errb.String())
	}
	if errb.Len() != 0 {
		// qmail-rspawn points fd 2 at fd 1: anything there corrupts the reports.
		t.Errorf("qmail-remote wrote to fd 2: %q", errb.String())
	}
	return parseReports(t, out.Bytes(), nrecip)
}

// parseReports checks the output's shape as qmail-rspawn relies on it:
// reports ending in a 0 byte, recipient letters r, h or s, at most one
// per recipient, then exactly one message report, K, Z or D, last.
func parseReports(t *testing.T, out []byte, nrecip int) result {
	t.Helper()
	res := result{raw: out}
	if len(out) == 0 || out[len(out)-1] != 0 {
		t.Fatalf("output %q does not end with a 0 byte", out)
	}
	parts := bytes.Split(out[:len(out)-1], []byte{0})
	for i, p := range parts {
		if len(p) == 0 {
			t.Fatalf("empty report %d in %q", i, out)
		}
		last := i == len(parts)-1
		switch {
		case last && bytes.IndexByte([]byte("KZD"), p[0]) >= 0:
			res.message = string(p)
		case !last && bytes.IndexByte([]byte("rhs"), p[0]) >= 0:
			res.recipients = append(res.recipients, string(p))
		default:
			t.Fatalf("report %d of %q: letter %q out of place", i, out, p[0])
		}
	}
	if len(res.recipients) > nrecip {
		t.Fatalf("%d recipient reports for %d recipients: %q", len(res.recipients), nrecip, out)
	}
	return res
}

// letters is the reports' letters, "rhK" for r, h and K.
func (r result) letters() string {
	var b strings.Builder
	for _, s := range r.recipients {
		b.WriteByte(s[0])
	}
	if r.message != "" {
		b.WriteByte(r.message[0])
	}
	return b.String()
}

// verdict is what qmail-rspawn tells qmail-send for the first recipient
// (qmail-rspawn always runs qmail-remote with one): its report() in Go,
// line for line.
func verdict(s []byte) string {
	if len(s) == 0 {
		return "Zqmail-remote produced no output.\n"
	}
	cstr := func(b []byte) string {
		if i := bytes.IndexByte(b, 0); i >= 0 {
			return string(b[:i])
		}
		return string(b)
	}
	result := -1
	j := 0
scan:
	for k := 0; k < len(s); k++ {
		if s[k] == 0 {
			switch s[j] {
			case 'K':
				result = 1
				break scan
			case 'Z':
				result = 0
				break scan
			case 'D':
				break scan
			}
			j = k + 1
		}
	}
	orr := result
	switch s[0] {
	case 's':
		orr = 0
	case 'h':
		orr = -1
	}
	var b strings.Builder
	b.WriteByte(map[int]byte{1: 'K', 0: 'Z', -1: 'D'}[orr])
	for k := 1; k < len(s); {
		c := s[k]
		k++
		if c == 0 {
			b.WriteString(cstr(s[1:]))
			if result <= orr && k < len(s) {
				switch s[k] {
				case 'Z', 'D', 'K':
					b.WriteString(cstr(s[k+1:]))
				}
			}
			break
		}
	}
	return b.String()
}

func testMessage(token string) []byte {
	return []byte("From: sender@example.test\nDate: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <" + token + "@example.test>\nSubject: " + token +
		"\n\n.leading dot\n..two dots\n.\n. dot space\ncaf\xc3\xa9 \xff\nlast line\n")
}

func portOf(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// scriptedSMTP is an SMTP server that greets with replies["GREETING"]
// (else 220), answers each command by its verb from replies (else as a
// willing server does), and the message's "."
// with afterDot ("": it closes without a reply); with closeAtOnce it
// closes every connection as soon as it is accepted. It counts
// connections.
func scriptedSMTP(t *testing.T, replies map[string]string, afterDot string, closeAtOnce bool) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			if closeAtOnce {
				c.Close()
				continue
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				br := bufio.NewReader(c)
				greeting := "220 scripted ESMTP"
				if g, ok := replies["GREETING"]; ok {
					greeting = g
				}
				fmt.Fprintf(c, "%s\r\n", greeting)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					if i := strings.IndexByte(verb, ':'); i >= 0 {
						verb = verb[:i]
					}
					rep, ok := replies[verb]
					switch {
					case ok:
					case verb == "EHLO" || verb == "HELO":
						rep = "250 scripted"
					case verb == "DATA":
						rep = "354 go on"
					case verb == "QUIT":
						fmt.Fprintf(c, "221 bye\r\n")
						return
					default:
						rep = "250 ok"
					}
					fmt.Fprintf(c, "%s\r\n", rep)
					if verb == "DATA" && strings.HasPrefix(rep, "354") {
						for {
							l, err := br.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
						}
						if afterDot == "" {
							return
						}
						fmt.Fprintf(c, "%s\r\n", afterDot)
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), &n
}

// A server that closes: at once, before the greeting, only the message
// report ("Connected to 127.0.0.1 but connection died."), no recipient
// report; after the message's ".", the recipients' 'r' then the Z saying
// the delivery may be a duplicate.
func TestSMTPServerCloses(t *testing.T) {
	r := newRun(t)
	atOnce, _ := scriptedSMTP(t, nil, "", true)
	r.control(t, "smtproutes", ":127.0.0.1:"+portOf(atOnce)+"\n")
	res := r.remote(t, testMessage("x"), "anywhere.test", "sender@example.test", "a@anywhere.test", "b@anywhere.test")
	if res.letters() != "Z" || !strings.HasPrefix(res.message, "ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n") {
		t.Fatalf("reports %q", res.raw)
	}

	afterDot, _ := scriptedSMTP(t, nil, "", false)
	r.control(t, "smtproutes", ":127.0.0.1:"+portOf(afterDot)+"\n")
	res = r.remote(t, testMessage("x"), "anywhere.test", "sender@example.test", "a@anywhere.test", "b@anywhere.test")
	if res.letters() != "rrZ" || !strings.HasPrefix(res.message, "ZConnected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n") {
		t.Fatalf("reports %q", res.raw)
	}
	if v := verdict(res.raw); !strings.HasPrefix(v, "Z") {
		t.Errorf("qmail-rspawn's verdict %q", v)
	}
}

// Refusals of the session as qmail-remote words them: the sender refused
// (D for 5xx, no recipient report), DATA refused, the message refused,
// every recipient refused ("Giving up"); hostile reply text (NUL, a
// multi-line reply) stays inside its report, on one line.
func TestSMTPScriptedRefusals(t *testing.T) {
	cases := []struct {
		name     string
		replies  map[string]string
		afterDot string
		letters  string
		message  string
		rcpt0    string
	}{
		{"sender 5xx", map[string]string{"MAIL": "553 no such sender"}, "250 ok", "D", "DConnected to 127.0.0.1 but sender was rejected.\nRemote host said: 553 no such sender\n", ""},
		{"sender 4xx", map[string]string{"MAIL": "451 later"}, "250 ok", "Z", "ZConnected to 127.0.0.1 but sender was rejected.\nRemote host said: 451 later\n", ""},
		{"greeting", map[string]string{"GREETING": "554 not now"}, "250 ok", "Z", "ZConnected to 127.0.0.1 but greeting failed.\nRemote host said: 554 not now\n", ""},
		{"helo refused", map[string]string{"EHLO": "554 go away", "HELO": "554 go away"}, "250 ok", "Z", "ZConnected to 127.0.0.1 but my name was rejected.\nRemote host said: 554 go away\n", ""},
		{"data", map[string]string{"DATA": "554 no data today"}, "250 ok", "rD", "D127.0.0.1 failed on DATA command.\nRemote host said: 554 no data today\n", "r"},
		{"after dot 4xx", nil, "452 disk full", "rZ", "Z127.0.0.1 failed after I sent the message.\nRemote host said: 452 disk full\n", "r"},
		{"after dot 5xx", nil, "554 spam", "rD", "D127.0.0.1 failed after I sent the message.\nRemote host said: 554 spam\n", "r"},
		{"all refused", map[string]string{"RCPT": "550 no"}, "250 ok", "hD", "DGiving up on 127.0.0.1.\n", "h127.0.0.1 does not like recipient.\nRemote host said: 550 no\n"},
		{"hostile text", map[string]string{"RCPT": "550-first\x00line\r\n550 second\rline"}, "250 ok", "hD", "DGiving up on 127.0.0.1.\n", "h127.0.0.1 does not like recipient.\nRemote host said: 550 first line second line\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr, _ := scriptedSMTP(t, c.replies, c.afterDot, false)
			r := newRun(t)
			r.control(t, "smtproutes", "scripted.test:127.0.0.1:"+portOf(addr)+"\n")
			res := r.remote(t, testMessage("x"), "scripted.test", "sender@example.test", "a@scripted.test")
			if res.letters() != c.letters || res.message != c.message || (c.rcpt0 != "" && res.recipients[0] != c.rcpt0) {
				t.Fatalf("reports %q, want letters %s, message %q, first recipient %q", res.raw, c.letters, c.message, c.rcpt0)
			}
		})
	}
}

// serveQMTP runs `qbox serve` with QMTP only into a maildir.
func serveQMTP(t *testing.T, extra ...string) (string, string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "dest")
	s := testpeer.StartServe(t, append([]string{"--qmtp", "127.0.0.1:0", "--qmqp", "", "--maildir", dest}, extra...)...)
	return s.QMTP, dest
}

func stored(t *testing.T, dest string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dest, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dest, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

// qmtproutes with a port sends the domain to `qbox serve` over QMTP, one
// package for every recipient, each answered on its own: K ('r'), D for a
// domain outside --rcpthosts ('h'), Z past --max-recipients ('s'); the
// message report is K, and the stored message is the bytes sent.
func TestQMTPRouteToServe(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("ok.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, dest := serveQMTP(t, "--rcpthosts", rcpthosts, "--max-recipients", "2")
	r := newRun(t)
	r.control(t, "qmtproutes", "ok.test:127.0.0.1:"+portOf(addr)+"\n")
	r.control(t, "smtproutes", "ok.test:127.0.0.1:1\n") // QMTP wins at the same level
	msg := testMessage(testpeer.Token(t))
	res := r.remote(t, msg, "ok.test", "sender@example.test", "k@ok.test", "d@elsewhere.test", "z@ok.test")
	if res.letters() != "rhsK" || !strings.HasPrefix(res.message, "K127.0.0.1 accepted message over QMTP.\nRemote host said: ") {
		t.Fatalf("reports %q, want r h s K", res.raw)
	}
	if !strings.HasPrefix(res.recipients[1], "h127.0.0.1 does not like recipient.\nRemote host said: ") ||
		!strings.HasPrefix(res.recipients[2], "s127.0.0.1 does not like recipient.\nRemote host said: ") {
		t.Errorf("refusal reports %q", res.recipients[1:])
	}
	got := stored(t, dest)
	if len(got) != 1 || !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("serve stored %d files (%q), want 1 ending with the message", len(got), got)
	}
	// qmail-rspawn's one-recipient runs: K, D and Z.
	for rcpt, want := range map[string]string{"k2@ok.test": "K127.0.0.1 accepted message over QMTP.", "d@elsewhere.test": "D127.0.0.1 does not like recipient."} {
		one := r.remote(t, msg, "ok.test", "sender@example.test", rcpt)
		if v := verdict(one.raw); !strings.HasPrefix(v, want) {
			t.Errorf("%s: qmail-rspawn's verdict %q, want %q", rcpt, v, want)
		}
	}
}

// A queue program behind serve that fails temporarily gives every
// recipient 's' and qmail-rspawn a Z; one that fails permanently 'h' and
// D.
func TestQMTPServeQueueProgram(t *testing.T) {
	for _, c := range []struct {
		exit    string
		letters string
		verdict string
	}{{"71", "ssD", "Z"}, {"31", "hhD", "D"}} {
		script := filepath.Join(t.TempDir(), "qq")
		if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\nexit "+c.exit+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		addr := testpeer.StartServe(t, "--qmtp", "127.0.0.1:0", "--qmqp", "", "--queue-program", script).QMTP
		r := newRun(t)
		r.control(t, "qmtproutes", ":127.0.0.1:"+portOf(addr)+"\n")
		res := r.remote(t, testMessage("x"), "q.test", "sender@example.test", "a@q.test", "b@q.test")
		if res.letters() != c.letters {
			t.Errorf("exit %s: reports %q, want %s", c.exit, res.raw, c.letters)
		}
		one := r.remote(t, testMessage("x"), "q.test", "sender@example.test", "a@q.test")
		if v := verdict(one.raw); !strings.HasPrefix(v, c.verdict) {
			t.Errorf("exit %s: qmail-rspawn's verdict %q", c.exit, v)
		}
	}
}

// closedPort is a loopback port where connecting is refused.
func closedPort(t *testing.T) string { return portOf(testpeer.ClosedAddr(t)) }

// qmail-rspawn's own run of qmail-remote, for the tests that check what
// qmail-send ends up logging: the program named as $QMAILREMOTE names it
// (the qmail-remote link, or anything else), started in <home>/queue/mess
// with the queue file opened there on fd 0, fd 2 joined to fd 1, one
// recipient, the host the part after its last '@', a clean environment,
// and the exit status read as qmail-rspawn reads it.

// rspawn runs prog (nil: the qmail-remote link) for one recipient as
// qmail-rspawn does and returns what qmail-rspawn tells qmail-send, and
// qmail-remote's raw output.
func (r *run) rspawn(t *testing.T, prog string, msg []byte, sender, recip string) (string, []byte) {
	t.Helper()
	if prog == "" {
		prog = testpeer.Personality(t, "qmail-remote")
	}
	mess := filepath.Join(r.home, "queue", "mess")
	name := filepath.Join("0", strings.NewReplacer("/", "-").Replace(t.Name())) // relative, as qmail-send names it
	if err := os.WriteFile(filepath.Join(mess, name), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(filepath.Join(mess, name))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	host := recip[strings.LastIndexByte(recip, '@')+1:]
	cmd := exec.Command(prog, host, sender, recip)
	cmd.Dir = mess
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, r.env...)
	var out bytes.Buffer
	cmd.Stdin = in
	cmd.Stdout, cmd.Stderr = &out, &out // one pipe: qmail-rspawn's fd_copy(2,1)
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "Zqmail-remote crashed.\n", out.Bytes()
		}
		if ee.ExitCode() == 111 {
			return "ZUnable to run qmail-remote.\n", out.Bytes()
		}
		return "DUnable to run qmail-remote.\n", out.Bytes()
	case err != nil:
		// qmail-rspawn's child exits 111 when execvp fails temporarily,
		// 100 otherwise; a missing program is permanent.
		return "DUnable to run qmail-remote.\n", nil
	}
	return verdict(out.Bytes()), out.Bytes()
}

// Under qmail-rspawn, with no $QMAILHOME anywhere, the routes in the
// control files of the home the working directory names are used: QMTP
// by qmtproutes into `qbox serve`, SMTP by smtproutes to an SMTP server;
// each recipient is delivered (K), not looked up in DNS and bounced.
func TestRspawnRoutesFromWorkingDirectory(t *testing.T) {
	if os.Getenv("QMAILHOME") != "" {
		t.Log("QMAILHOME is set in the test's environment; the runs do not pass it on")
	}
	qmtpAddr, dest := serveQMTP(t)
	smtpAddr, smtpConns := scriptedSMTP(t, nil, "250 ok queued", false)
	r := newRun(t)
	r.control(t, "qmtproutes", "qmtp.test:127.0.0.1:"+portOf(qmtpAddr)+"\n")
	r.control(t, "smtproutes", "smtp.test:127.0.0.1:"+portOf(smtpAddr)+"\n")

	msg := testMessage(testpeer.Token(t))
	v, raw := r.rspawn(t, "", msg, "sender@example.test", "one@qmtp.test")
	if !strings.HasPrefix(v, "K127.0.0.1 accepted message over QMTP.\n") {
		t.Fatalf("QMTP route: qmail-rspawn's verdict %q (reports %q)", v, raw)
	}
	if got := stored(t, dest); len(got) != 1 || !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("serve stored %d messages, want the one sent", len(got))
	}
	v, raw = r.rspawn(t, "", msg, "sender@example.test", "one@smtp.test")
	if !strings.HasPrefix(v, "K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n") || smtpConns.Load() != 1 {
		t.Fatalf("SMTP route: qmail-rspawn's verdict %q (reports %q), %d SMTP connections", v, raw, smtpConns.Load())
	}

	// $QMAILHOME, when set, wins over the working directory.
	other := newRun(t)
	other.control(t, "qmtproutes", "qmtp.test:127.0.0.1:"+closedPort(t)+"\n")
	r.env = []string{"QMAILHOME=" + other.home}
	if v, raw := r.rspawn(t, "", msg, "sender@example.test", "two@qmtp.test"); !strings.HasPrefix(v, "ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n") {
		t.Fatalf("QMAILHOME's routes: verdict %q (reports %q)", v, raw)
	}
}

// Control files that cannot be read defer (Z) with the reason and the
// way the home was found, never bounce: no control directory under the
// home the working directory names, a $QMAILHOME without one, an
// unreadable route file.
func TestRspawnControlUnreadable(t *testing.T) {
	msg := testMessage("x")
	r := newRun(t)
	if err := os.RemoveAll(filepath.Join(r.home, "control")); err != nil {
		t.Fatal(err)
	}
	v, raw := r.rspawn(t, "", msg, "sender@example.test", "a@remote.test")
	if !strings.HasPrefix(v, "ZUnable to read control files. (#4.3.0)\nqbox: stat "+filepath.Join(r.home, "control")+": no such file or directory; qmail's home "+r.home+" is from the working directory <home>/queue/mess;") {
		t.Fatalf("no control directory: verdict %q (reports %q)", v, raw)
	}

	r = newRun(t, "QMAILHOME="+filepath.Join(t.TempDir(), "nowhere"))
	if v, raw := r.rspawn(t, "", msg, "sender@example.test", "a@remote.test"); !strings.HasPrefix(v, "ZUnable to read control files. (#4.3.0)\n") || !strings.Contains(v, "is from $QMAILHOME") {
		t.Fatalf("QMAILHOME without control: verdict %q (reports %q)", v, raw)
	}

	r = newRun(t)
	r.control(t, "smtproutes", "")
	if err := os.Remove(filepath.Join(r.home, "control", "smtproutes")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(r.home, "control", "smtproutes"), 0o755); err != nil { // unreadable as a file, even by root
		t.Fatal(err)
	}
	if v, raw := r.rspawn(t, "", msg, "sender@example.test", "a@remote.test"); !strings.HasPrefix(v, "ZUnable to read control files. (#4.3.0)\n") {
		t.Fatalf("unreadable smtproutes: verdict %q (reports %q)", v, raw)
	}
}

// $QMAILREMOTE naming the qbox binary itself, not a link called
// qmail-remote: qbox sees qmail-rspawn's working directory and arguments
// and defers (Z, exit 0) saying how to make the link, so the mail stays
// queued. Run elsewhere, the same command line is still an unknown
// command (exit 100).
func TestRspawnMislinkedBinary(t *testing.T) {
	r := newRun(t)
	v, raw := r.rspawn(t, testpeer.Binary(t), testMessage("x"), "sender@example.test", "a@remote.test")
	want := "Zqbox was run by qmail-rspawn as \"qbox\", not as qmail-remote, so it did not know what to do. (#4.3.5)\n"
	if !strings.HasPrefix(v, want) || !strings.Contains(v, "ln -s "+testpeer.Binary(t)+" "+filepath.Join(r.home, "bin", "qmail-remote")) {
		t.Fatalf("verdict %q (reports %q)", v, raw)
	}
	if n := bytes.Count(raw, []byte{0}); n != 1 || raw[0] != 'Z' {
		t.Errorf("%d reports in %q, want the one Z", n, raw)
	}

	cmd := exec.Command(testpeer.Binary(t), "remote.test", "sender@example.test", "a@remote.test")
	cmd.Dir = t.TempDir()
	if code := testpeer.ExitCode(t, cmd.Run()); code != 100 {
		t.Errorf("outside queue/mess: exit %d, want 100 (unknown command)", code)
	}
}

// silentServer accepts connections and reads them without ever replying,
// until the test ends.
func silentServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				go func() { <-done; c.Close() }()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// A QMTP session that dies (the server closes after the connect) or
// times out (control/timeoutremote, the server silent) is reported as
// qmail-remote reports an SMTP session that dies: the one Z, "Connected
// to 127.0.0.1 but connection died. (#4.4.2)", no 's' before it, so
// qmail-rspawn's line carries the sentence once.
func TestRspawnQMTPSessionDiesReportParity(t *testing.T) {
	closing, _ := scriptedSMTP(t, nil, "", true)
	silent, _ := silentServer(t)
	for _, c := range []struct{ name, addr, timeout string }{{"dies", closing, ""}, {"times out", silent, "1\n"}} {
		t.Run(c.name, func(t *testing.T) {
			r := newRun(t)
			r.control(t, "qmtproutes", ":127.0.0.1:"+portOf(c.addr)+"\n")
			if c.timeout != "" {
				r.control(t, "timeoutremote", c.timeout)
			}
			v, raw := r.rspawn(t, "", testMessage("x"), "sender@example.test", "a@remote.test")
			const died = "Connected to 127.0.0.1 but connection died. (#4.4.2)\n"
			if raw == nil || raw[0] != 'Z' || bytes.Count(raw, []byte{0}) != 1 {
				t.Fatalf("reports %q, want the one Z", raw)
			}
			if !strings.HasPrefix(v, "Z"+died) || strings.Count(v, "connection died") != 1 {
				t.Fatalf("qmail-rspawn's verdict %q, want %q once", v, died)
			}
			// Two recipients (not qmail-rspawn's way, qmail-remote's
			// interface): still the one Z.
			res := r.remote(t, testMessage("x"), "remote.test", "sender@example.test", "a@remote.test", "b@remote.test")
			if res.letters() != "Z" || !strings.HasPrefix(res.message, "Z"+died) {
				t.Fatalf("two recipients: reports %q", res.raw)
			}
		})
	}
}
