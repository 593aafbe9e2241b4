//go:build peers

package benchmarks

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
// smtp/qmtp is how much longer SMTP takes. The issue sets no target;
// x/limit says how close each comes to what its protocol allows. The
// bytes each way are reported too: QMTP's reply is one netstring per
// recipient carrying the server's text (serve's names the stored file,
// several times the length of Postfix's "250 2.1.5 Ok" to each RCPT), and
// on this line those bytes can cost more than SMTP's round trips.
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
