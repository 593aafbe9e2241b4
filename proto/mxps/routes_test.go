package mxps

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"qbox/proto/testkit/dnstest"
)

func mustRoutes(t *testing.T, s string) Routes {
	t.Helper()
	r, err := ParseRoutes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Routes are found as qmail-remote finds them in smtproutes: the host,
// then each ".suffix", then the default route; the last line for a
// domain wins; comments, blank lines and lines without ':' are skipped;
// case does not matter; at the same level qmtproutes comes first, and a
// more specific SMTP route beats a QMTP default.
func TestFindRoute(t *testing.T) {
	smtp := mustRoutes(t, "# routes\n\nexample.com:relay.example.net:2525 \t\nEXAMPLE.com:smtp.example.net\n.example.com:[192.0.2.7]\nno colon here\n:default.example.net\nlocal.example.com:\n")
	qmtp := mustRoutes(t, "qmtp.example.org:q.example.net:2209\n.example.org:[2001:db8::1]:2209\n:qdefault.example.net\n")
	cases := []struct {
		host string
		qmtp Routes
		want string
	}{
		{"example.com", Routes{}, "SMTP example.com smtp.example.net "},
		{"Mail.Example.COM", Routes{}, "SMTP .example.com [192.0.2.7] "},
		{"local.example.com", Routes{}, "SMTP local.example.com  "}, // "use DNS", stops the search
		{"elsewhere.test", Routes{}, "SMTP  default.example.net "},
		{"qmtp.example.org", qmtp, "QMTP qmtp.example.org q.example.net 2209"},
		{"a.example.org", qmtp, "QMTP .example.org [2001:db8::1] 2209"},
		{"example.com", qmtp, "SMTP example.com smtp.example.net "},
		{"elsewhere.test", qmtp, "QMTP  qdefault.example.net "},
	}
	for _, c := range cases {
		rt, ok := FindRoute(c.host, c.qmtp, smtp)
		got := fmt.Sprintf("%s %s %s %s", rt.Protocol, rt.Domain, rt.Relay, rt.Port)
		if !ok || got != c.want {
			t.Errorf("FindRoute(%q) = %q, %v; want %q", c.host, got, ok, c.want)
		}
	}
	if _, ok := FindRoute("x.test", Routes{}, mustRoutes(t, "y.test:relay\n")); ok {
		t.Error("a route found where none applies")
	}
	if _, err := ParseRoutes(make([]byte, MaxRoutesFile+1)); err == nil {
		t.Error("an oversized routes file was read")
	}
}

func attemptsString(as []Attempt) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, fmt.Sprintf("%s %s", a.Protocol, a.Addr))
	}
	return strings.Join(parts, ", ")
}

// PlanDelivery against a real DNS server: a route's relay is looked up
// for its addresses (never its MX) and used over the route's protocol at
// the route's port; [address] is SMTP; a name's exchangers follow MXPS;
// NXDOMAIN, SERVFAIL, a null MX, no address and a bad route port are
// errors a caller can tell apart.
func TestPlanDelivery(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Zone{
		Records: []string{
			"relay.test. 300 IN A 192.0.2.10",
			"relay.test. 300 IN MX 10 ignored.test.",
			"mxps.test. 300 IN MX 12801 q.mxps.test.",
			"mxps.test. 300 IN MX 20 s.mxps.test.",
			"q.mxps.test. 300 IN A 192.0.2.1",
			"s.mxps.test. 300 IN A 192.0.2.2",
			"null.test. 300 IN MX 0 .",
			"noaddr.test. 300 IN MX 10 gone.noaddr.test.",
			"gone.noaddr.test. 300 IN TXT \"nothing\"",
		},
		Rcode: map[string]int{"broken.test": dns.RcodeServerFailure},
	})
	r := Server(srv.Addr, time.Second)
	smtp := mustRoutes(t, "routed.test:relay.test:2525\nliteral.test:192.0.2.99\nbadport.test:relay.test:99999\n")
	qmtp := mustRoutes(t, "q.routed.test:relay.test\n")
	rnd := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for host, want := range map[string]string{
		"routed.test":   "SMTP 192.0.2.10:2525",
		"q.routed.test": "QMTP 192.0.2.10:209",
		"literal.test":  "SMTP 192.0.2.99:25",
		"[192.0.2.50]":  "SMTP 192.0.2.50:25",
		"mxps.test":     "SMTP 192.0.2.2:25, QMTP 192.0.2.1:209, SMTP 192.0.2.1:25", // by preference: 20, then 12801
	} {
		plan, err := PlanDelivery(ctx, r, host, qmtp, smtp, Ports{}, rnd)
		if err != nil || attemptsString(plan.Attempts) != want {
			t.Errorf("%s: %q, %v; want %q", host, attemptsString(plan.Attempts), err, want)
		}
	}
	var de *DNSError
	if _, err := PlanDelivery(ctx, r, "nx.test", qmtp, smtp, Ports{}, rnd); !errors.As(err, &de) || !de.NotFound {
		t.Errorf("nx.test: %v, want NXDOMAIN", err)
	}
	if _, err := PlanDelivery(ctx, r, "broken.test", qmtp, smtp, Ports{}, rnd); !errors.As(err, &de) || !de.Temporary {
		t.Errorf("broken.test: %v, want a temporary DNS error", err)
	}
	if _, err := PlanDelivery(ctx, r, "null.test", qmtp, smtp, Ports{}, rnd); !errors.Is(err, ErrNullMX) {
		t.Errorf("null.test: %v, want ErrNullMX", err)
	}
	if _, err := PlanDelivery(ctx, r, "noaddr.test", qmtp, smtp, Ports{}, rnd); !errors.Is(err, ErrNoAddress) {
		t.Errorf("noaddr.test: %v, want ErrNoAddress", err)
	}
	var re *RouteError
	if _, err := PlanDelivery(ctx, r, "badport.test", qmtp, smtp, Ports{}, rnd); !errors.As(err, &re) {
		t.Errorf("badport.test: %v, want a RouteError", err)
	}
}
