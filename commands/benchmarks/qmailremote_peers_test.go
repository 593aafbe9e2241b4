//go:build peers

package benchmarks

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/linksim"
	"qbox/proto/testkit/testpeer"
)

// qmailHome makes a $QMAILHOME whose control/ holds helohost and one
// route file (qmtproutes or smtproutes) sending example.test to the line.
func qmailHome(b *testing.B, routes string, line *linksim.Proxy) string {
	b.Helper()
	home := b.TempDir()
	control := filepath.Join(home, "control")
	if err := os.Mkdir(control, 0o755); err != nil {
		b.Fatal(err)
	}
	writeFile(b, control, "helohost", []byte(benchHelo+"\n"))
	writeFile(b, control, routes, []byte("example.test:"+line.Addr+"\n"))
	return home
}

// qmailRemote runs the qmail-remote personality as qmail-rspawn does (the
// message file on fd 0) and fails the benchmark unless every recipient got
// 'r' and the message 'K'.
func qmailRemote(b *testing.B, prog, home, msg string, args []string) result {
	b.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "QMAILHOME=" + home}
	f, err := os.Open(msg)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd.Stdin = f
	r := runCmd(b, cmd)
	reports := bytes.Split(bytes.TrimSuffix(r.stdout, []byte{0}), []byte{0})
	ok := len(reports) == len(args)-1 && bytes.HasPrefix(reports[len(reports)-1], []byte("K"))
	for _, rep := range reports[:len(reports)-1] {
		ok = ok && bytes.HasPrefix(rep, []byte("r"))
	}
	if !ok {
		b.Fatalf("qmail-remote %s: reports %q, want 'r' for each of %d recipients, then 'K'", home, tail(r.stdout), len(args)-2)
	}
	return r
}

// BenchmarkQmailRemote100Recipients is the seed's claim on qmail's own
// delivery path: one 2 KB message to 100 recipients at one domain through
// the 28.8 kbit/s line (3600 bytes/s each way, 100 ms one-way), sent by
// the qmail-remote personality as qmail-rspawn runs it, in the same run:
//
//   - qmtp-s: routed by control/qmtproutes over QMTP to `qbox serve`
//     behind the line: one package with all 100 recipients. Its limit
//     (qmtp-limit-s) is the bytes both ways over the rate plus one round
//     trip: the reply cannot leave before the whole package has arrived.
//   - smtp-s: routed by control/smtproutes over SMTP to Postfix's smtpd
//     behind the line, with PIPELINING (MAIL, the RCPTs and DATA in
//     batches of at most 100 commands, the client's bound, so these 102
//     take two batches and one round trip more than SMTP needs). Its limit
//     (smtp-limit-s) is the bytes both ways over the rate plus the
//     waits SMTP cannot avoid: the greeting's one-way trip and three
//     round trips (EHLO; MAIL, RCPTs and DATA up to the 354; the message
//     up to its reply).
//
// smtp/qmtp is how much longer SMTP takes (issue 26's target: QMTP at
// most 0.8 x SMTP's time, so smtp/qmtp at least 1.25); x/limit says how
// close each comes to what its protocol allows. The bytes each way are
// reported too: QMTP's reply is one netstring per recipient carrying the
// server's text, and on this line those bytes cost as much as SMTP's
// round trips, which is why serve's K text is as short as qmail-qmtpd's.
func BenchmarkQmailRemote100Recipients(b *testing.B) {
	const size, recipients = 2048, 100
	pf := testpeer.StartPostfix(b)
	remote := testpeer.Personality(b, "qmail-remote")
	qmtpAddr, dest := serveQMTP(b)
	qmtpLine := modem(b, qmtpAddr)
	smtpLine := modem(b, pf.SMTPAddr)
	qmtpHome := qmailHome(b, "qmtproutes", qmtpLine)
	smtpHome := qmailHome(b, "smtproutes", smtpLine)
	token := testpeer.Token(b)
	msg := writeFile(b, b.TempDir(), "mess", append([]byte("Subject: "+token+"\n\n"), body2K(size)...))
	args := append([]string{"example.test", "s@example.test"}, modemRecipients(recipients)...)
	var bytesUp, bytesDown [2]int64 // QMTP, SMTP
	send := func(proto int, line *linksim.Proxy, home string, waits time.Duration) (elapsed, limit time.Duration) {
		up0, down0, conns := line.BytesUp(), line.BytesDown(), line.Connections()
		r := qmailRemote(b, remote, home, msg, args)
		if line.Connections() != conns+1 {
			b.Fatalf("qmail-remote (%s) did not go through the line", home)
		}
		up, down := line.BytesUp()-up0, line.BytesDown()-down0
		bytesUp[proto] += up
		bytesDown[proto] += down
		return r.elapsed, wire(up) + wire(down) + waits
	}
	b.ResetTimer()
	var qmtp, qmtpLimit, smtp, smtpLimit time.Duration
	for i := 0; i < b.N; i++ {
		stored := counting.Files(b, filepath.Join(dest, "new"))
		el, lim := send(0, qmtpLine, qmtpHome, 2*modemLatency)
		qmtp, qmtpLimit = qmtp+el, qmtpLimit+lim
		if counting.Files(b, filepath.Join(dest, "new")) == stored {
			b.Fatalf("serve stored nothing")
		}
		el, lim = send(1, smtpLine, smtpHome, 7*modemLatency)
		smtp, smtpLimit = smtp+el, smtpLimit+lim
	}
	b.StopTimer()
	removePostfixMail(b, pf, token, b.N*recipients)
	n := float64(b.N)
	b.ReportMetric(qmtp.Seconds()/n, "qmtp-s")
	b.ReportMetric(qmtpLimit.Seconds()/n, "qmtp-limit-s")
	b.ReportMetric(qmtp.Seconds()/qmtpLimit.Seconds(), "qmtp/limit")
	b.ReportMetric(smtp.Seconds()/n, "smtp-s")
	b.ReportMetric(smtpLimit.Seconds()/n, "smtp-limit-s")
	b.ReportMetric(smtp.Seconds()/smtpLimit.Seconds(), "smtp/limit")
	b.ReportMetric(smtp.Seconds()/qmtp.Seconds(), "smtp/qmtp")
	b.ReportMetric(float64(bytesUp[0])/n, "qmtp-bytes-up")
	b.ReportMetric(float64(bytesDown[0])/n, "qmtp-bytes-down")
	b.ReportMetric(float64(bytesUp[1])/n, "smtp-bytes-up")
	b.ReportMetric(float64(bytesDown[1])/n, "smtp-bytes-down")
}

// rspawnCall runs the qmail-remote personality once as qmail-rspawn does
// (host, sender, one recipient; the message file on fd 0) and returns its
// time, or an error unless it reported 'r' then 'K'. It may run on any
// goroutine (it never calls b.Fatal).
func rspawnCall(prog, home, msg, rcpt string) (time.Duration, error) {
	cmd := exec.Command(prog, "example.test", "s@example.test", rcpt)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "QMAILHOME=" + home}
	f, err := os.Open(msg)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("qmail-remote %s: %v\n%s", home, err, tail(stderr.Bytes()))
	}
	if !bytes.HasPrefix(stdout.Bytes(), []byte("r")) || !bytes.Contains(stdout.Bytes(), []byte("\x00K")) {
		return 0, fmt.Errorf("qmail-remote %s: reports %q, want 'r' then 'K'", home, tail(stdout.Bytes()))
	}
	return elapsed, nil
}

// rspawn sends n messages through the personality, one recipient per
// call and concurrency calls at once (qmail-send's concurrencyremote), and
// returns the wall time and the median call.
func rspawn(b *testing.B, prog, home, msg string, n, concurrency int) (wall, median time.Duration) {
	b.Helper()
	rcpts := modemRecipients(n)
	jobs := make(chan string)
	var mu sync.Mutex
	var calls []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rcpt := range jobs {
				d, err := rspawnCall(prog, home, msg, rcpt)
				mu.Lock()
				calls = append(calls, d)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	for _, r := range rcpts {
		jobs <- r
	}
	close(jobs)
	wg.Wait()
	wall = time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return wall, medianDuration(calls)
}

// BenchmarkQmailRemoteRspawn is qmail's own delivery path as qmail-send
// drives it: qmail-rspawn hands qmail-remote one recipient per call
// (spawn() passes host, sender and a single recipient), 20 calls at once
// (concurrencyremote 20), here 200 messages of 2 KB, each call over its
// own 28.8 kbit/s, 100 ms connection (linksim paces every connection on
// its own, as calls to 20 different hosts would go). Measured in the same
// run, by the same personality:
//
//   - qmtp-s: control/qmtproutes, QMTP into `qbox serve`: the connection,
//     one package up and one reply down.
//   - smtp-s: control/smtproutes, SMTP into Postfix's smtpd: the
//     greeting, EHLO, MAIL/RCPT/DATA (pipelined), the message and its
//     reply, QUIT, as notqmail's qmail-remote does it.
//   - smtp-serve-s: the same SMTP into `qbox serve`'s SMTP listener, to
//     tell the protocol from the server.
//
// qmtp/smtp is the target figure (at most 0.6): on this path QMTP's
// advantage is round trips, which one recipient per call cannot share.
// The *-call-ms figures are the median call of each.
func BenchmarkQmailRemoteRspawn(b *testing.B) {
	const size, messages, concurrency = 2048, 200, 20
	pf := testpeer.StartPostfix(b)
	remote := testpeer.Personality(b, "qmail-remote")
	dest := filepath.Join(b.TempDir(), "dest")
	srv := testpeer.StartServe(b, "--qmtp", "127.0.0.1:0", "--qmqp", "", "--smtp", "127.0.0.1:0", "--maildir", dest)
	qmtpLine, smtpLine, serveSMTPLine := modem(b, srv.QMTP), modem(b, pf.SMTPAddr), modem(b, srv.SMTP)
	qmtpHome := qmailHome(b, "qmtproutes", qmtpLine)
	smtpHome := qmailHome(b, "smtproutes", smtpLine)
	serveSMTPHome := qmailHome(b, "smtproutes", serveSMTPLine)
	token := testpeer.Token(b)
	msg := writeFile(b, b.TempDir(), "mess", append([]byte("Subject: "+token+"\n\n"), body2K(size)...))
	rspawnCall(remote, qmtpHome, msg, "warm@example.test") // loads the binary into the page cache
	stored := func() int { return counting.Files(b, filepath.Join(dest, "new")) }
	b.ResetTimer()
	var qmtp, smtp, serveSMTP, qmtpCall, smtpCall, serveSMTPCall time.Duration
	for i := 0; i < b.N; i++ {
		before := stored()
		w, c := rspawn(b, remote, qmtpHome, msg, messages, concurrency)
		qmtp, qmtpCall = qmtp+w, qmtpCall+c
		w, c = rspawn(b, remote, smtpHome, msg, messages, concurrency)
		smtp, smtpCall = smtp+w, smtpCall+c
		w, c = rspawn(b, remote, serveSMTPHome, msg, messages, concurrency)
		serveSMTP, serveSMTPCall = serveSMTP+w, serveSMTPCall+c
		if got := stored() - before; got != 2*messages {
			b.Fatalf("serve stored %d messages, want %d (QMTP and SMTP)", got, 2*messages)
		}
	}
	b.StopTimer()
	for _, l := range []*linksim.Proxy{qmtpLine, smtpLine, serveSMTPLine} {
		if l.Connections() < int64(b.N*messages) {
			b.Fatalf("only %d connections went through the line, want %d", l.Connections(), b.N*messages)
		}
	}
	removePostfixMail(b, pf, token, b.N*messages)
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / n }
	b.ReportMetric(qmtp.Seconds()/n, "qmtp-s")
	b.ReportMetric(smtp.Seconds()/n, "smtp-s")
	b.ReportMetric(serveSMTP.Seconds()/n, "smtp-serve-s")
	b.ReportMetric(qmtp.Seconds()/smtp.Seconds(), "qmtp/smtp")
	b.ReportMetric(qmtp.Seconds()/serveSMTP.Seconds(), "qmtp/smtp-serve")
	b.ReportMetric(ms(qmtpCall), "qmtp-call-ms")
	b.ReportMetric(ms(smtpCall), "smtp-call-ms")
	b.ReportMetric(ms(serveSMTPCall), "smtp-serve-call-ms")
	per := func(l *linksim.Proxy) (float64, float64) {
		c := float64(l.Connections())
		return float64(l.BytesUp()) / c, float64(l.BytesDown()) / c
	}
	up, down := per(qmtpLine)
	b.ReportMetric(up, "qmtp-bytes-up/call")
	b.ReportMetric(down, "qmtp-bytes-down/call")
	up, down = per(smtpLine)
	b.ReportMetric(up, "smtp-bytes-up/call")
	b.ReportMetric(down, "smtp-bytes-down/call")
}
