//go:build peers

package mxcheck

// --probe against the system's Postfix (smtpd) and mailfront's QMTP front
// end under tcpserver: `go test -tags peers` (make test), as root.

import (
	"net"
	"strings"
	"testing"
	"time"

	"qbox/proto/mxps"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

// TestProbe checks --probe against real servers on 127.0.0.1: mailfront's
// QMTP front end on a free port standing in for 209 and Postfix's smtpd
// on 25.
func TestProbe(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	pf := testpeer.StartPostfix(t)
	qmtpAddr := testpeer.Mailfront(t, "qmtp")
	_, qport, _ := net.SplitHostPort(qmtpAddr)
	_, sport, _ := net.SplitHostPort(pf.SMTPAddr)
	ports := mxps.Ports{QMTP: qport, SMTP: sport}
	_, closed, _ := net.SplitHostPort(testpeer.ClosedAddr(t))

	r := checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true, Ports: ports, Wait: greetWait})
	if r.status != QMTP || r.json[0].Status != QMTP {
		t.Fatalf("live.t: %v\n%s", r.status, r.table)
	}
	a := r.json[0].Exchangers[0].Addresses[0]
	if a.QMTP == nil || a.QMTP.State != "open" || a.QMTP.Heard != "silence" || a.SMTP == nil || a.SMTP.SMTPCode != 220 {
		t.Fatalf("live.t probes: %+v %+v", a.QMTP, a.SMTP)
	}
	if !row("12801", "#1", "qmtp", "live-mx.t", "127.0.0.1", "open, silent", "open, 220 banner").MatchString(r.table) ||
		!strings.Contains(r.table, "1 QMTP exchanger address(es) answer on "+qport) || strings.Contains(r.table, "warning") {
		t.Fatalf("live.t table:\n%s", r.table)
	}

	// QMTP answers but SMTP does not: still QMTP, with MXPS's warning.
	r = checkRun(t, Config{Domains: []string{"live.t"}, Resolver: res, Probe: true, Ports: mxps.Ports{QMTP: qport, SMTP: closed}})
	if r.status != QMTP || !strings.Contains(r.table, "MXPS requires QMTP on 127.0.0.1:"+qport+" and SMTP on 127.0.0.1:"+closed) {
		t.Fatalf("live.t without SMTP: %v\n%s", r.status, r.table)
	}

	// Published, but nothing answers: exit 1.
	r = checkRun(t, Config{Domains: []string{"dead.t"}, Resolver: res, Probe: true, Ports: ports, Wait: greetWait})
	if r.status != NoQMTP || r.json[0].Exchangers[0].Addresses[0].QMTP.State != "closed" ||
		!strings.Contains(r.table, "QMTP exchangers published, but none answers on "+qport) {
		t.Fatalf("dead.t: %v\n%s", r.status, r.table)
	}
	// The same without --probe: published is enough.
	if r := checkRun(t, Config{Domains: []string{"dead.t"}, Resolver: res}); r.status != QMTP {
		t.Fatalf("dead.t without --probe: %v", r.status)
	}

	// One dead and one live QMTP exchanger: exit 0, dead one warned about.
	r = checkRun(t, Config{Domains: []string{"mixed.t"}, Resolver: res, Probe: true, Ports: ports, Wait: greetWait})
	if r.status != QMTP || !strings.Contains(r.table, "dead-mx.t: 127.0.0.3: MXPS requires") {
		t.Fatalf("mixed.t: %v\n%s", r.status, r.table)
	}
	// Only QMTP exchangers are probed.
	r = checkRun(t, Config{Domains: []string{"s12800.t"}, Resolver: res, Probe: true, Ports: ports, Wait: greetWait})
	if r.status != NoQMTP || r.json[0].Exchangers[0].Addresses[0].QMTP != nil {
		t.Fatalf("s12800.t: %v\n%s", r.status, r.table)
	}
}
