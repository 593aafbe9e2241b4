//go:build peers

package benchmarks

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// Recipients of the modem benchmark: the names smtp-source gives with
// -r N -t bench@example.test (bench@, 2bench@, 3bench@, ...), so that
// QMQP and SMTP carry the same addresses.
func modemRecipients(n int) []string {
	out := []string{"bench@example.test"}
	for i := 2; i <= n; i++ {
		out = append(out, strconv.Itoa(i)+"bench@example.test")
	}
	return out
}

// BenchmarkModem1000Recipients is QMQP's headline claim, measured: one
// 2 KB message to 1000 recipients over a 28.8 kbit/s line (3600 bytes/s
// each way, 100 ms one-way delay, proto/testkit/linksim).
//
//   - qbox-s: `qbox inject` with the 1000 recipients into Postfix's
//     qmqp-sink behind the line, process start to exit.
//   - limit-s: the physical limit of that exchange: the bytes qbox sent
//     and the reply took on the line, each divided by the rate, plus one
//     round trip (the reply cannot leave before the message has arrived).
//     qbox/limit is the target figure: at most 1.05.
//   - smtp-s: Postfix's smtp-source (no pipelining: one round trip per
//     command) sending the same 2 KB message into Postfix's smtpd behind
//     the same line. A 1000-recipient run would take over three minutes,
//     so it is measured with 1 and with 50 recipients, and the straight
//     line through those two points is read at 1000 recipients
//     (smtp-1rcpt-s and smtp-50rcpt-s are the measured times). smtp/qbox
//     is how many times longer SMTP takes.
func BenchmarkModem1000Recipients(b *testing.B) {
	const size, recipients = 2048, 1000
	const few, many = 1, 50
	sink := testpeer.QmqpSink(b)
	pf := testpeer.StartPostfix(b)
	bin := testpeer.Binary(b)
	smtpSource := testpeer.Require(b, "smtp-source", "postfix")
	qmqpLine := modem(b, sink)
	smtpLine := modem(b, pf.SMTPAddr)
	token := testpeer.Token(b)
	msg := writeFile(b, b.TempDir(), "msg", append([]byte("Subject: "+token+"\n\n"), body2K(size)...))
	injectArgv := append([]string{bin, "inject", "-s", qmqpLine.Addr, "-f", "s@example.test"}, modemRecipients(recipients)...)
	smtp := func(n int) time.Duration {
		before := smtpLine.Connections()
		r := run(b, "", smtpSource, "-m", "1", "-s", "1", "-r", strconv.Itoa(n), "-l", strconv.Itoa(size),
			"-S", token, "-f", "s@example.test", "-t", "bench@example.test", smtpLine.Addr)
		if smtpLine.Connections() != before+1 {
			b.Fatalf("smtp-source did not go through the line")
		}
		return r.elapsed
	}
	b.ResetTimer()
	var qbox, limit, smtpFew, smtpMany time.Duration
	for i := 0; i < b.N; i++ {
		up0, down0 := qmqpLine.BytesUp(), qmqpLine.BytesDown()
		qbox += run(b, msg, injectArgv...).elapsed
		up, down := qmqpLine.BytesUp()-up0, qmqpLine.BytesDown()-down0
		if up < recipients*int64(len("bench@example.test")) || down == 0 {
			b.Fatalf("inject sent %d bytes and got %d back through the line", up, down)
		}
		limit += wire(up) + wire(down) + 2*modemLatency
		smtpFew += smtp(few)
		smtpMany += smtp(many)
	}
	b.StopTimer()
	removePostfixMail(b, pf, token, b.N*(few+many))
	n := float64(b.N)
	perRecipient := (smtpMany - smtpFew).Seconds() / (many - few)
	smtp1000 := smtpMany.Seconds()/n + perRecipient/n*(recipients-many)
	b.ReportMetric(qbox.Seconds()/n, "qbox-s")
	b.ReportMetric(limit.Seconds()/n, "limit-s")
	b.ReportMetric(qbox.Seconds()/limit.Seconds(), "qbox/limit")
	b.ReportMetric(smtpFew.Seconds()/n, fmt.Sprintf("smtp-%drcpt-s", few))
	b.ReportMetric(smtpMany.Seconds()/n, fmt.Sprintf("smtp-%drcpt-s", many))
	b.ReportMetric(smtp1000, "smtp-s")
	b.ReportMetric(smtp1000/(qbox.Seconds()/n), "smtp/qbox")
}
