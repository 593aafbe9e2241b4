//go:build peers

package benchmarks

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"path/filepath"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// benchHelo is the EHLO name of the SMTP benchmarks, so that no control
// file or host name decides it.
const benchHelo = "qbox-bench.example"

// fillMaildir makes a maildir of n messages of size bytes each (a Subject
// with token, a blank line, 64-byte lines), as qmail-local leaves them for
// flush-maildir: sender s@example.test, recipients ppp-rNNNNN@example.test
// (Postfix's test domain, so nothing it takes leaves as a bounce).
func fillMaildir(b *testing.B, n, size int, token string) string {
	b.Helper()
	src := newMaildir(b)
	for i := 0; i < n; i++ {
		msg := append([]byte(fmt.Sprintf("Subject: %s %d\n\n", token, i)), body2K(size)...)[:size]
		msg[size-1] = '\n'
		enqueue(b, src, fmt.Sprintf("1700000000.b%05d.host", i), "s@example.test",
			fmt.Sprintf("ppp-r%05d@example.test", i), bytes.NewReader(msg))
	}
	return src
}

// flushAll runs flush-maildir (argv, DIR and PREFIX last) and fails the
// benchmark unless every message left the maildir.
func flushAll(b *testing.B, src string, argv ...string) result {
	b.Helper()
	r := run(b, "", append(argv, src, "ppp-")...)
	if left := counting.Files(b, filepath.Join(src, "new")); left != 0 {
		b.Fatalf("%v: %d files left in the maildir\n%s", argv, left, tail(r.stdout))
	}
	return r
}

// BenchmarkFlushSMTPBesideQMTPModem flushes 200 messages of 2 KB from a
// maildir through the 28.8 kbit/s line (3600 bytes/s each way, 100 ms
// one-way, proto/testkit/linksim) twice in the same run: `flush-maildir --smtp`
// into Postfix's smtpd (which offers PIPELINING, and no STARTTLS) and
// `flush-maildir` over QMTP into `qbox serve`. Each is beside the wire
// limit of its own protocol, computed from the bytes that crossed the
// line:
//
//   - QMTP (qmtp-limit-s): nothing waits for a reply, and the line is
//     full duplex, so the busier direction's bytes over the rate plus one
//     round trip (the last reply leaves after the last message arrived);
//     as in BenchmarkFlushGroupModem. Target: qmtp/limit at most 1.05.
//   - SMTP (smtp-limit-s): the bytes both ways, commands and replies
//     included, over the rate, plus the waits SMTP cannot avoid: the
//     greeting's one-way trip, EHLO's round trip (PIPELINING is known
//     only from its reply), one round trip per message (DATA ends a
//     pipelined group and the message may go only after 354, RFC 2920;
//     the replies of the group come back before the 354, in order, so
//     they are on the same path) and one for the last message's reply.
//     The message itself and the next message's MAIL, RCPT and DATA may
//     share a group, so that is all. Target: smtp/limit at most 1.10.
//
// smtp-waits is the SMTP time not explained by its bytes, in round
// trips: about one per message means the client pipelines as far as
// SMTP allows (qbox's does: the next MAIL, RCPT and DATA follow each
// "."), about two means it waits for each message's reply before the
// next MAIL. The bytes counted are those sent, so any command the client
// could leave out would be in the limit. smtp/qmtp is how much longer
// SMTP takes.
func BenchmarkFlushSMTPBesideQMTPModem(b *testing.B) {
	const messages, size = 200, 2048
	pf := testpeer.StartPostfix(b)
	bin := testpeer.Binary(b)
	qmtpAddr, dest := serveQMTP(b)
	qmtpLine := modem(b, qmtpAddr)
	smtpLine := modem(b, pf.SMTPAddr)
	token := testpeer.Token(b)
	qmtpRun := func() (time.Duration, time.Duration) {
		src := fillMaildir(b, messages, size, token)
		stored := counting.Files(b, filepath.Join(dest, "new"))
		up0, down0, conns := qmtpLine.BytesUp(), qmtpLine.BytesDown(), qmtpLine.Connections()
		r := run(b, "", bin, "flush-maildir", "--quiet", src, "ppp-", qmtpLine.Addr)
		if left := counting.Files(b, filepath.Join(src, "new")); left != 0 {
			b.Fatalf("flush-maildir: %d files left in the maildir\n%s", left, tail(r.stdout))
		}
		if got := counting.Files(b, filepath.Join(dest, "new")) - stored; got != messages {
			b.Fatalf("serve stored %d files, want %d", got, messages)
		}
		if qmtpLine.Connections() != conns+1 {
			b.Fatalf("flush-maildir did not go through the line")
		}
		up, down := qmtpLine.BytesUp()-up0, qmtpLine.BytesDown()-down0
		return r.elapsed, wire(max(up, down)) + 2*modemLatency
	}
	var smtpBytes time.Duration // wire(up) + wire(down) of the SMTP runs
	smtpRun := func() (time.Duration, time.Duration) {
		src := fillMaildir(b, messages, size, token)
		up0, down0, conns := smtpLine.BytesUp(), smtpLine.BytesDown(), smtpLine.Connections()
		r := flushAll(b, src, bin, "flush-maildir", "--quiet", "--smtp", smtpLine.Addr, "--helo", benchHelo)
		if smtpLine.Connections() != conns+1 {
			b.Fatalf("flush-maildir --smtp did not go through the line")
		}
		up, down := smtpLine.BytesUp()-up0, smtpLine.BytesDown()-down0
		smtpBytes += wire(up) + wire(down)
		return r.elapsed, wire(up) + wire(down) + (2*messages+5)*modemLatency
	}
	b.ResetTimer()
	var qmtpTime, qmtpLimit, smtpTime, smtpLimit time.Duration
	for i := 0; i < b.N; i++ {
		if i%2 == 0 { // each goes first in turn
			el, lim := qmtpRun()
			qmtpTime, qmtpLimit = qmtpTime+el, qmtpLimit+lim
			el, lim = smtpRun()
			smtpTime, smtpLimit = smtpTime+el, smtpLimit+lim
		} else {
			el, lim := smtpRun()
			smtpTime, smtpLimit = smtpTime+el, smtpLimit+lim
			el, lim = qmtpRun()
			qmtpTime, qmtpLimit = qmtpTime+el, qmtpLimit+lim
		}
	}
	b.StopTimer()
	removePostfixMail(b, pf, token, b.N*messages)
	n := float64(b.N)
	b.ReportMetric(qmtpTime.Seconds()/n, "qmtp-s")
	b.ReportMetric(qmtpLimit.Seconds()/n, "qmtp-limit-s")
	b.ReportMetric(qmtpTime.Seconds()/qmtpLimit.Seconds(), "qmtp/limit")
	b.ReportMetric(smtpTime.Seconds()/n, "smtp-s")
	b.ReportMetric(smtpLimit.Seconds()/n, "smtp-limit-s")
	b.ReportMetric(smtpTime.Seconds()/smtpLimit.Seconds(), "smtp/limit")
	b.ReportMetric((smtpTime-smtpBytes).Seconds()/n/(2*modemLatency).Seconds(), "smtp-waits")
	b.ReportMetric(float64(2*messages+5)/2, "smtp-limit-waits")
	b.ReportMetric(smtpTime.Seconds()/qmtpTime.Seconds(), "smtp/qmtp")
}

// BenchmarkFlushSMTPLoopback10k flushes 10,000 messages of 2 KB from a
// maildir over loopback into Postfix's smtpd with `flush-maildir --smtp`
// (one connection, PIPELINING), beside Postfix's own smtp-source sending
// 10,000 messages of 2 KB over one connection (-d; it does not pipeline)
// into the same smtpd in the same run: messages per second of each, the
// ratio, and each client's peak RSS (the child's rusage). Postfix queues
// every message durably before its 250 and slows acceptance when its
// delivery falls behind (in_flow_delay), so both figures are bounded by
// Postfix; the ratio says whether the client adds to that. smtp-source's
// payload is -l 2048 plus its own headers (about 150 bytes).
//
// Postfix delivers both runs' 20,000 messages into the mailbox other
// tests search; they are removed as they arrive (removePostfixMail), and
// the second run starts only once the first run's mail is gone, so
// neither run pays for the other's deliveries.
func BenchmarkFlushSMTPLoopback10k(b *testing.B) {
	const messages, size = 10000, 2048
	pf := testpeer.StartPostfix(b)
	bin := testpeer.Binary(b)
	smtpSource := testpeer.Require(b, "smtp-source", "postfix")
	var qboxTime, peerTime time.Duration
	var qboxRSS, peerRSS float64
	qbox := func() {
		token := testpeer.Token(b)
		src := fillMaildir(b, messages, size, token)
		r := flushAll(b, src, bin, "flush-maildir", "--quiet", "--smtp", pf.SMTPAddr, "--helo", benchHelo)
		qboxTime += r.elapsed
		qboxRSS = max(qboxRSS, r.peakRSS)
		removePostfixMail(b, pf, token, messages)
	}
	peer := func() {
		token := testpeer.Token(b)
		r := run(b, "", smtpSource, "-d", "-s", "1", "-m", strconv.Itoa(messages), "-l", strconv.Itoa(size),
			"-S", token, "-M", benchHelo, "-f", "s@example.test", "-t", "bench@"+pf.Domain, pf.SMTPAddr)
		peerTime += r.elapsed
		peerRSS = max(peerRSS, r.peakRSS)
		removePostfixMail(b, pf, token, messages)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			qbox()
			peer()
		} else {
			peer()
			qbox()
		}
	}
	b.StopTimer()
	total := float64(b.N * messages)
	b.ReportMetric(total/qboxTime.Seconds(), "smtp-msgs/s")
	b.ReportMetric(qboxRSS, "smtp-peak-RSS-MiB")
	b.ReportMetric(total/peerTime.Seconds(), "smtp-source-msgs/s")
	b.ReportMetric(peerRSS, "smtp-source-peak-RSS-MiB")
	b.ReportMetric(peerTime.Seconds()/qboxTime.Seconds(), "qbox/smtp-source")
}
