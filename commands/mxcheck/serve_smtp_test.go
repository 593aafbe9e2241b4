package mxcheck

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"qbox/proto/mxps"
	"qbox/proto/mxps/dnstest"
	"qbox/proto/testpeer"
)

// --probe against a host running only `qbox serve --qmtp --smtp`: both
// ports answer (QMTP silent, SMTP with a 220 banner), so the exchanger
// is a complete MXPS receiver and no warning is printed.
func TestProbeServeQMTPAndSMTP(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	qmtpAddr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	smtpAddr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	testpeer.Start(t, nil, testpeer.Binary(t), "serve", "--qmqp", "", "--qmtp", qmtpAddr, "--smtp", smtpAddr,
		"--maildir", t.TempDir())
	testpeer.WaitListening(t, qmtpAddr, 20*time.Second)
	testpeer.WaitListening(t, smtpAddr, 20*time.Second)
	_, qport, _ := net.SplitHostPort(qmtpAddr)
	_, sport, _ := net.SplitHostPort(smtpAddr)

	r := checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true,
		Ports: mxps.Ports{QMTP: qport, SMTP: sport}, Wait: greetWait})
	if r.code != 0 || r.json[0].Status != "qmtp" {
		t.Fatalf("live.t: exit %d\n%s", r.code, r.table)
	}
	a := r.json[0].Exchangers[0].Addresses[0]
	if a.QMTP == nil || a.QMTP.State != "open" || a.SMTP == nil || a.SMTP.State != "open" || a.SMTP.SMTPCode != 220 {
		t.Fatalf("probes: %+v %+v", a.QMTP, a.SMTP)
	}
	if strings.Contains(r.table, "warning") || strings.Contains(r.table, "MXPS requires") {
		t.Errorf("a warning for a complete receiver:\n%s", r.table)
	}
}
