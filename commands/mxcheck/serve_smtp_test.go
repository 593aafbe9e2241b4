package mxcheck

import (
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/mxps"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// --probe against a host running only `qbox serve --qmtp --smtp`: both
// ports answer (QMTP silent, SMTP with a 220 banner), so the exchanger
// is a complete MXPS receiver and no warning is printed. A closed SMTP
// port beside it is warned about, and nothing answering on the QMTP port
// means no QMTP.
func TestProbeServeQMTPAndSMTP(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	s := testpeer.StartServe(t, "--qmqp", "", "--qmtp", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "--maildir", t.TempDir())
	_, qport, _ := net.SplitHostPort(s.QMTP)
	_, sport, _ := net.SplitHostPort(s.SMTP)

	r := checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true,
		Ports: mxps.Ports{QMTP: qport, SMTP: sport}, Wait: greetWait})
	if r.status != QMTP || r.json[0].Status != QMTP {
		t.Fatalf("live.t: %v\n%s", r.status, r.table)
	}
	a := r.json[0].Exchangers[0].Addresses[0]
	if a.QMTP == nil || a.QMTP.State != "open" || a.QMTP.Heard != "silence" || a.SMTP == nil || a.SMTP.State != "open" || a.SMTP.SMTPCode != 220 {
		t.Fatalf("probes: %+v %+v", a.QMTP, a.SMTP)
	}
	if strings.Contains(r.table, "warning") || strings.Contains(r.table, "MXPS requires") {
		t.Errorf("a warning for a complete receiver:\n%s", r.table)
	}
	if !row("12801", "#1", "qmtp", "live-mx.t", "127.0.0.1", "open, silent", "open, 220 banner").MatchString(r.table) {
		t.Errorf("table:\n%s", r.table)
	}

	// QMTP answers but SMTP does not: still QMTP, with MXPS's warning.
	_, closed, _ := net.SplitHostPort(testpeer.ClosedAddr(t))
	r = checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true, Ports: mxps.Ports{QMTP: qport, SMTP: closed}})
	if r.status != QMTP || !strings.Contains(r.table, "MXPS requires QMTP on 127.0.0.1:"+qport+" and SMTP on 127.0.0.1:"+closed) {
		t.Fatalf("live.t without SMTP: %v\n%s", r.status, r.table)
	}

	// Nothing on the QMTP port: published, but none answers.
	r = checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true, Ports: mxps.Ports{QMTP: closed, SMTP: sport}, Wait: greetWait})
	if r.status != NoQMTP || r.json[0].Exchangers[0].Addresses[0].QMTP.State != "closed" ||
		!strings.Contains(r.table, "QMTP exchangers published, but none answers on "+closed) {
		t.Fatalf("live.t without QMTP: %v\n%s", r.status, r.table)
	}
}
