package mxps

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"qbox/proto/testkit/dnstest"
)

func edgeZone() dnstest.Zone {
	return dnstest.Zone{
		Records: []string{
			"qmtp.t. 60 IN A 192.0.2.1",
			"qmtp.t. 60 IN AAAA 2001:db8::1",
			"smtp.t. 60 IN A 192.0.2.2",
			"a.t. 60 IN A 192.0.2.10",
			"b.t. 60 IN A 192.0.2.11",
			"q12801.t. 60 IN MX 12801 qmtp.t.",
			"q13041.t. 60 IN MX 13041 qmtp.t.",
			"s12800.t. 60 IN MX 12800 smtp.t.",
			"u13042.t. 60 IN MX 13042 qmtp.t.",
			"u13057.t. 60 IN MX 13057 qmtp.t.",
			"u10001.t. 60 IN MX 10001 smtp.t.",
			"equal.t. 60 IN MX 12801 a.t.",
			"equal.t. 60 IN MX 12801 b.t.",
			"equal.t. 60 IN MX 10 smtp.t.",
			"cname.t. 60 IN MX 12801 alias.t.",
			"alias.t. 60 IN CNAME qmtp.t.",
			"far.t. 60 IN MX 12801 faralias.t.",
			"faralias.t. 60 IN CNAME qmtp.t.",
			"implicit.t. 60 IN A 192.0.2.3",
			"null.t. 60 IN MX 0 .",
			"nullmixed.t. 60 IN MX 0 .",
			"nullmixed.t. 60 IN MX 12801 qmtp.t.",
			"literal.t. 60 IN MX 12801 192.0.2.9.",
			"noaddr.t. 60 IN MX 12801 nothere.t.",
			"badaddr.t. 60 IN MX 12801 sf.t.",
			"nodata.t. 60 IN TXT \"nothing\"",
			"domalias.t. 60 IN CNAME q12801.t.",
		},
		Rcode:   map[string]int{"servfail.t": dns.RcodeServerFailure, "sf.t": dns.RcodeServerFailure, "refused.t": dns.RcodeRefused},
		Drop:    []string{"timeout.t"},
		NoChase: []string{"faralias.t"},
	}
}

func lookup(t *testing.T, r Resolver, domain string) (Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return LookupOrdered(ctx, r, domain, rand.New(rand.NewPCG(1, 2)))
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestLookupEdges(t *testing.T) {
	srv := dnstest.Start(t, edgeZone())
	r := Server(srv.Addr, 2*time.Second)

	type want struct {
		classes  []Class
		hosts    []string
		addrs    [][]netip.Addr
		qmtp     bool
		implicit bool
		null     bool
		warn     string // substring of some warning
	}
	cases := map[string]want{
		"q12801.t": {classes: []Class{QMTP}, hosts: []string{"qmtp.t"}, addrs: [][]netip.Addr{addrs("192.0.2.1", "2001:db8::1")}, qmtp: true},
		"q13041.t": {classes: []Class{QMTP}, qmtp: true},
		"s12800.t": {classes: []Class{MXPSSMTP}},
		"u13042.t": {classes: []Class{Unassigned}, warn: "reserved slice #2"},
		"u13057.t": {classes: []Class{Unassigned}, warn: "above the experimental"},
		"u10001.t": {classes: []Class{Unassigned}, warn: "between SMTP"},
		"equal.t":  {classes: []Class{SMTP, QMTP, QMTP}, qmtp: true},
		"cname.t":  {classes: []Class{QMTP}, qmtp: true, addrs: [][]netip.Addr{addrs("192.0.2.1", "2001:db8::1")}, warn: "alias (CNAME to qmtp.t)"},
		// The server leaves the target out; the resolver asks for it.
		"far.t":       {classes: []Class{QMTP}, qmtp: true, addrs: [][]netip.Addr{addrs("192.0.2.1", "2001:db8::1")}, warn: "alias (CNAME to qmtp.t)"},
		"implicit.t":  {classes: []Class{SMTP}, hosts: []string{"implicit.t"}, implicit: true, addrs: [][]netip.Addr{addrs("192.0.2.3")}},
		"null.t":      {null: true},
		"nullmixed.t": {classes: []Class{QMTP}, qmtp: true, warn: "null MX (RFC 7505) published beside"},
		"literal.t":   {classes: []Class{QMTP}, qmtp: true, warn: "address literal"},
		"noaddr.t":    {classes: []Class{QMTP}, qmtp: true, warn: "address lookup failed"},
		"nodata.t":    {classes: []Class{SMTP}, implicit: true, warn: "no MX records and no address"},
		"domalias.t":  {classes: []Class{QMTP}, qmtp: true},
	}
	for domain, w := range cases {
		t.Run(domain, func(t *testing.T) {
			rep, err := lookup(t, r, domain)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			var classes []Class
			var hosts []string
			var as [][]netip.Addr
			for _, e := range rep.Exchangers {
				classes = append(classes, e.Class)
				hosts = append(hosts, e.Host)
				as = append(as, e.Addrs)
			}
			if !slices.Equal(classes, w.classes) {
				t.Errorf("classes %v, want %v", classes, w.classes)
			}
			if w.hosts != nil && !slices.Equal(hosts, w.hosts) {
				t.Errorf("hosts %v, want %v", hosts, w.hosts)
			}
			if w.addrs != nil && !slices.EqualFunc(as, w.addrs, slices.Equal) {
				t.Errorf("addresses %v, want %v", as, w.addrs)
			}
			if rep.HasQMTP() != w.qmtp || rep.Implicit != w.implicit || rep.Null != w.null {
				t.Errorf("qmtp %v implicit %v null %v, want %v %v %v", rep.HasQMTP(), rep.Implicit, rep.Null, w.qmtp, w.implicit, w.null)
			}
			all := strings.Join(rep.Warnings, "\n")
			for _, e := range rep.Exchangers {
				all += "\n" + strings.Join(e.Warnings, "\n")
			}
			if w.warn != "" && !strings.Contains(all, w.warn) {
				t.Errorf("warnings %q lack %q", all, w.warn)
			}
			if w.warn == "" && strings.TrimSpace(all) != "" {
				t.Errorf("unexpected warnings %q", all)
			}
		})
	}

	// A domain that is an alias: the MX records are its target's.
	rep, _ := lookup(t, r, "domalias.t")
	if rep.CNAME != "q12801.t" {
		t.Errorf("domalias.t CNAME %q", rep.CNAME)
	}

	for domain, check := range map[string]func(*DNSError) bool{
		"servfail.t": func(e *DNSError) bool { return e.Temporary && !e.NotFound && e.Rcode == "SERVFAIL" },
		"refused.t":  func(e *DNSError) bool { return e.Temporary && e.Rcode == "REFUSED" },
		"nxdomain.t": func(e *DNSError) bool { return e.NotFound && !e.Temporary },
	} {
		_, err := lookup(t, r, domain)
		var de *DNSError
		if !errors.As(err, &de) || !check(de) {
			t.Errorf("%s: error %#v", domain, err)
		}
	}
	quick := Server(srv.Addr, 200*time.Millisecond)
	_, err := lookup(t, quick, "timeout.t")
	var de *DNSError
	if !errors.As(err, &de) || !de.Temporary {
		t.Errorf("timeout.t: error %#v", err)
	}
}

// TestLookupEqualPreferences checks that equal preferences come out in
// both orders over a few random sources, and always after lower ones.
func TestLookupEqualPreferences(t *testing.T) {
	srv := dnstest.Start(t, edgeZone())
	r := Server(srv.Addr, 2*time.Second)
	seen := map[string]bool{}
	for seed := uint64(0); seed < 32; seed++ {
		rep, err := LookupOrdered(context.Background(), r, "equal.t", rand.New(rand.NewPCG(seed, seed)))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Exchangers[0].Host != "smtp.t" {
			t.Fatalf("preference 10 not first: %+v", rep.Exchangers)
		}
		seen[rep.Exchangers[1].Host] = true
	}
	if len(seen) != 2 {
		t.Fatalf("equal preferences always in the same order: %v", seen)
	}
}

// TestSystemResolver runs Lookup through Go's resolver pointed at the
// test server, as mx-check does without --resolver.
func TestSystemResolver(t *testing.T) {
	srv := dnstest.Start(t, edgeZone())
	nr := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Addr)
	}}
	r := systemResolver{r: nr}
	rep, err := lookup(t, r, "q12801.t")
	if err != nil || !rep.HasQMTP() || !slices.Equal(rep.Exchangers[0].Addrs, addrs("192.0.2.1", "2001:db8::1")) {
		t.Fatalf("q12801.t: %+v %v", rep, err)
	}
	rep, err = lookup(t, r, "implicit.t")
	if err != nil || !rep.Implicit || !slices.Equal(rep.Exchangers[0].Addrs, addrs("192.0.2.3")) {
		t.Fatalf("implicit.t: %+v %v", rep, err)
	}
	rep, err = lookup(t, r, "null.t")
	if err != nil || !rep.Null {
		t.Fatalf("null.t: %+v %v", rep, err)
	}
	rep, err = lookup(t, r, "cname.t")
	if err != nil || rep.Exchangers[0].CNAME != "qmtp.t" {
		t.Fatalf("cname.t: %+v %v", rep, err)
	}
	var de *DNSError
	if _, err := lookup(t, r, "nxdomain.t"); !errors.As(err, &de) || !de.NotFound {
		t.Fatalf("nxdomain.t: %v", err)
	}
	if _, err := lookup(t, r, "servfail.t"); !errors.As(err, &de) || !de.Temporary {
		t.Fatalf("servfail.t: %v", err)
	}
}
