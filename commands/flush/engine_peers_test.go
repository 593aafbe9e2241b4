//go:build peers

package flush

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// --lifetime applies to malformed files: past it, a file that cannot be
// sent is reported to the postmaster (with its contents when it is a
// regular file, without when it is a symlink) and removed; the target of
// a symlink is never touched. With --no-bounce, or no QMQP server for
// the report, it stays and the output says so.
func TestFlushMalformedPastLifetime(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("not yours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setup := func() string {
		src := newMaildir(t)
		if err := os.WriteFile(filepath.Join(src, "new", "1700000001.bad."+token), []byte("From: nobody\nDelivered-To: ppp-r@remote.test\n\nbody "+token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(src, "new", "1700000002.link."+token)); err != nil {
			t.Fatal(err)
		}
		return src
	}
	bad, link := "new/1700000001.bad."+token, "new/1700000002.link."+token
	closed := testpeer.ClosedAddr(t) // the QMTP server, unreachable

	// Kept: --no-bounce, and no server for the report.
	for _, args := range [][]string{{"--no-bounce", "--bounce-server", pf.QMQPAddr}, {}} {
		src := setup()
		stdout, _, code := runQbox(t, []string{"QMQPSERVERS=", "QMAILHOME=" + t.TempDir()}, append(append([]string{"flush-maildir", "--lifetime", "1ns"}, args...), src, "ppp-", closed)...)
		if code != 111 || len(remaining(t, src)) != 2 {
			t.Fatalf("%v: exit %d, left %v\n%s", args, code, remaining(t, src), stdout)
		}
		for _, name := range []string{bad, link} {
			if !strings.Contains(stdout, "malformed "+name) || !strings.Contains(stdout, "too old; kept") {
				t.Errorf("%v: %s not reported as too old and kept:\n%s", args, name, stdout)
			}
		}
	}

	src := setup()
	stdout, stderr, code := runQbox(t, nil, "flush-maildir", "--lifetime", "1ns", "--bounce-server", pf.QMQPAddr,
		"--postmaster", "postmaster@"+pf.Domain, "--json", src, "ppp-", closed)
	if code != 0 { // nothing left: no message needed the (unreachable) QMTP server
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	r := parseJSON(t, stdout)
	status := map[string]string{}
	for _, m := range r.Messages {
		status[m.File] = m.Status
	}
	if status[bad] != "bounced" || status[link] != "bounced" || r.Summary.Remaining != 0 {
		t.Fatalf("outcomes %v, summary %+v, want both reported and removed\n%s", status, r.Summary, stdout)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "not yours\n" {
		t.Errorf("the symlink's target changed: %q %v", b, err)
	}
	reports := pf.WaitFor(t, token, 2, 30*time.Second)
	var withBody, withoutBody int
	for _, m := range reports {
		if !bytes.Contains(m, []byte("Delivered-To: postmaster@"+pf.Domain)) || !bytes.Contains(m, []byte("multipart/report")) {
			t.Errorf("not a report to the postmaster:\n%s", m)
		}
		switch {
		case bytes.Contains(m, []byte("body "+token)):
			withBody++
		case bytes.Contains(m, []byte("not yours")):
			t.Errorf("the symlink's target was attached:\n%s", m)
		default:
			withoutBody++
		}
	}
	if withBody != 1 || withoutBody != 1 {
		t.Errorf("%d reports with the file attached, %d without; want 1 and 1", withBody, withoutBody)
	}
}

// The sendmail spool (QMQP, proto/queue/spool) and flush-maildir (QMTP) run on
// the one engine: the same queue gives the same outcomes. The receiving
// `qbox serve` hands each message to a queue program that accepts,
// refuses permanently (d-) or temporarily (z-) by recipient.
func TestSpoolAndFlushSameOutcomes(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	script := filepath.Join(t.TempDir(), "qq")
	qq := "#!/bin/sh\ncat >/dev/null\nexec 3<&1\nenv=$(tr '\\000' '\\n' <&3)\ncase \"$env\" in *Td-*) exit 31;; *Tz-*) exit 71;; esac\nexit 0\n"
	if err := os.WriteFile(script, []byte(qq), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := testpeer.StartServe(t, "--qmtp", "127.0.0.1:0", "--qmqp", "127.0.0.1:0", "--queue-program", script)
	qmtpAddr, qmqpAddr := srv.QMTP, srv.QMQP

	token := testpeer.Token(t)
	files := []struct {
		name, rcpt string
		age        time.Duration
	}{
		{"1700000001.k1", "k-1@remote.test", time.Hour},
		{"1700000002.k2", "k-2@remote.test", time.Hour},
		{"1700000003.d1", "d-1@remote.test", time.Hour},
		{"1700000004.zy", "z-young@remote.test", time.Hour},
		{"1700000005.zo", "z-old@remote.test", 15 * 24 * time.Hour},
	}
	fillQueue := func(dir string) {
		for i, f := range files {
			enqueue(t, dir, f.name, "owner-"+token+"@"+pf.Domain, f.rcpt, []byte("Subject: "+token+" "+itoa(i)+"\n\nbody\n"), f.age)
		}
		if err := os.WriteFile(filepath.Join(dir, "new", "1700000006.bad"), []byte("no envelope\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	spoolDir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	fillQueue(spoolDir)
	bounceVia := &qmqp.Client{Servers: []string{pf.QMQPAddr}}
	// The spool's run (sendmail -q's, queue.QMQPRelay), its bounces
	// through Postfix.
	qc := queue.QMQPRelay(sp.Source(nil), &qmqp.Client{Servers: []string{qmqpAddr}}, pf.Domain)
	qc.Bouncer = &queue.QMQPBouncer{Config: bounce.Config{Hostname: pf.Domain}, Client: bounceVia}
	res, err := queue.Run(context.Background(), qc)
	if err != queue.ErrRemaining {
		t.Fatalf("spool: %v", err)
	}

	src := newMaildir(t)
	fillQueue(src)
	sum, err := Run(context.Background(), Config{Dir: src, Connect: hostConnect(qmtpAddr, &qmtp.Client{}),
		BounceServers: []string{pf.QMQPAddr}, Bounce: bounce.Config{Hostname: pf.Domain}})
	if err != queue.ErrRemaining {
		t.Fatalf("flush-maildir: %v", err)
	}

	want := [4]int{2, 2, 1, 1} // K, bounced (D and too old), deferred, malformed
	if got := [4]int{res.Succeeded, res.Bounced, res.Deferred, res.Malformed}; got != want {
		t.Errorf("spool: delivered, bounced, deferred, malformed = %v, want %v", got, want)
	}
	if got := [4]int{sum.Succeeded, sum.Bounced, sum.Deferred, sum.Malformed}; got != want {
		t.Errorf("flush-maildir: succeeded, bounced, deferred, malformed = %v, want %v", got, want)
	}
	left := func(dir string) string {
		names := remaining(t, dir)
		sort.Strings(names)
		return strings.Join(names, " ")
	}
	if a, b := left(spoolDir), left(src); a != b || a != "new/1700000004.zy new/1700000006.bad" {
		t.Errorf("left in the spool: %s; in the maildir: %s; want the young deferred and the malformed file in both", a, b)
	}
	pf.WaitFor(t, token, 4, 30*time.Second) // two bounces from each run
}

func itoa(n int) string { return strconv.Itoa(n) }
