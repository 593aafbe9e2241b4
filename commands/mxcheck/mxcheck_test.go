package mxcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"qbox/proto/mxps"
	"qbox/proto/testkit/dnstest"
	"qbox/proto/testkit/testpeer"
)

func zone() dnstest.Zone {
	return dnstest.Zone{
		Records: []string{
			"qmtp.t. 60 IN A 127.0.0.1",
			"qmtp.t. 60 IN AAAA ::1",
			"smtp.t. 60 IN A 127.0.0.1",
			"a.t. 60 IN A 127.0.0.10",
			"b.t. 60 IN A 127.0.0.11",
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
			"implicit.t. 60 IN A 127.0.0.5",
			"null.t. 60 IN MX 0 .",
			"literal.t. 60 IN MX 12801 127.0.0.9.",
			"badaddr.t. 60 IN MX 12801 sf.t.",
			// --probe: live-mx.t is 127.0.0.1, where the tests' QMTP and
			// SMTP servers listen; nothing listens on 127.0.0.3.
			"live-mx.t. 60 IN A 127.0.0.1",
			"dead-mx.t. 60 IN A 127.0.0.3",
			"live.t. 60 IN MX 12801 live-mx.t.",
			"dead.t. 60 IN MX 12801 dead-mx.t.",
			"mixed.t. 60 IN MX 12801 dead-mx.t.",
			"mixed.t. 60 IN MX 12817 live-mx.t.",
		},
		Rcode: map[string]int{"servfail.t": dns.RcodeServerFailure, "sf.t": dns.RcodeServerFailure},
		Drop:  []string{"timeout.t"},
	}
}

// greetWait is how long a probe waits for a greeting: Postfix starts an
// smtpd per connection, which can take a while on a busy CI machine, and
// so can qbox serve. A banner ends the wait at once.
const greetWait = 5 * time.Second

type run struct {
	status Status
	table  string
	json   []DomainResult
}

func checkRun(t *testing.T, cfg Config) run {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Wait == 0 {
		cfg.Wait = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r run
	var table, js bytes.Buffer
	cfg.Rand = rand.New(rand.NewPCG(3, 4))
	status, err := Run(ctx, cfg, &table)
	if err != nil {
		t.Fatal(err)
	}
	cfg.JSON = true
	cfg.Rand = rand.New(rand.NewPCG(3, 4))
	jstatus, err := Run(ctx, cfg, &js)
	if err != nil {
		t.Fatal(err)
	}
	if status != jstatus {
		t.Fatalf("%v for the table, %v for --json", status, jstatus)
	}
	if err := json.Unmarshal(js.Bytes(), &r.json); err != nil {
		t.Fatalf("JSON %s: %v", js.String(), err)
	}
	r.status, r.table = status, table.String()
	t.Logf("mx-check %v: %v\n%s", cfg.Domains, status, r.table)
	return r
}

// row matches a table row whose cells are separated by runs of spaces.
func row(cells ...string) *regexp.Regexp {
	for i, c := range cells {
		cells[i] = regexp.QuoteMeta(c)
	}
	return regexp.MustCompile(`(?m)^\s+` + strings.Join(cells, `\s+`) + `\s*$`)
}

func TestEdges(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	cases := []struct {
		domain  string
		status  string
		rows    []*regexp.Regexp
		text    []string // in the table
		check   func(DomainResult) bool
		warning string // in the JSON's warnings
	}{
		{domain: "q12801.t", status: "qmtp",
			rows:  []*regexp.Regexp{row("12801", "#1", "qmtp", "qmtp.t", "127.0.0.1 ::1")},
			text:  []string{"publishes 1 QMTP exchanger(s) (MXPS)"},
			check: func(r DomainResult) bool { return *r.Exchangers[0].Slice == 1 && r.Exchangers[0].Class == mxps.QMTP }},
		{domain: "q13041.t", status: "qmtp",
			rows:  []*regexp.Regexp{row("13041", "#1", "qmtp", "qmtp.t", "127.0.0.1 ::1")},
			check: func(r DomainResult) bool { return *r.Exchangers[0].Slice == 1 }},
		{domain: "s12800.t", status: "no-qmtp",
			rows:  []*regexp.Regexp{row("12800", "#0", "mxps-smtp", "smtp.t", "127.0.0.1")},
			text:  []string{"no QMTP exchanger: mail goes over SMTP"},
			check: func(r DomainResult) bool { return *r.Exchangers[0].Slice == 0 }},
		{domain: "u13042.t", status: "no-qmtp",
			rows:    []*regexp.Regexp{row("13042", "#2", "unassigned", "qmtp.t", "127.0.0.1 ::1")},
			warning: "preference 13042 is unassigned by MXPS (reserved slice #2)",
			check:   func(r DomainResult) bool { return *r.Exchangers[0].Slice == 2 }},
		{domain: "u13057.t", status: "no-qmtp",
			rows:    []*regexp.Regexp{row("13057", "-", "unassigned", "qmtp.t", "127.0.0.1 ::1")},
			warning: "preference 13057 is unassigned by MXPS (above the experimental 12800–13055)",
			check:   func(r DomainResult) bool { return r.Exchangers[0].Slice == nil }},
		{domain: "u10001.t", status: "no-qmtp",
			rows:    []*regexp.Regexp{row("10001", "-", "unassigned", "smtp.t", "127.0.0.1")},
			warning: "preference 10001 is unassigned by MXPS (between SMTP's 0–10000",
		},
		{domain: "equal.t", status: "qmtp",
			text: []string{"publishes 2 QMTP exchanger(s)"},
			check: func(r DomainResult) bool {
				e := r.Exchangers
				return len(e) == 3 && e[0].Preference == 10 && e[0].Class == mxps.SMTP &&
					e[1].Preference == 12801 && e[2].Preference == 12801 && e[1].Host != e[2].Host
			}},
		{domain: "cname.t", status: "qmtp",
			rows:    []*regexp.Regexp{row("12801", "#1", "qmtp", "alias.t -> qmtp.t", "127.0.0.1 ::1")},
			warning: "MX points at an alias (CNAME to qmtp.t)",
			check:   func(r DomainResult) bool { return r.Exchangers[0].CNAME == "qmtp.t" }},
		{domain: "implicit.t", status: "no-qmtp",
			rows:  []*regexp.Regexp{row("0", "-", "smtp (implicit MX)", "implicit.t", "127.0.0.5")},
			text:  []string{"no MX records: mail goes to the domain's own address over SMTP (implicit MX)"},
			check: func(r DomainResult) bool { return r.ImplicitMX && !r.NullMX }},
		{domain: "null.t", status: "no-qmtp",
			text:  []string{"MX 0 . (null MX, RFC 7505)", "null MX (RFC 7505): the domain accepts no mail"},
			check: func(r DomainResult) bool { return r.NullMX && len(r.Exchangers) == 0 }},
		{domain: "literal.t", status: "no-qmtp",
			rows:    []*regexp.Regexp{row("12801", "#1", "qmtp", "127.0.0.9", "(none)")},
			warning: "MX points at an address literal",
			check:   func(r DomainResult) bool { return r.Exchangers[0].Literal }},
		{domain: "badaddr.t", status: "temporary",
			text: []string{"addresses could not be looked up now"}},
		{domain: "servfail.t", status: "temporary",
			text: []string{"MX servfail.t at " + srv.Addr + ": SERVFAIL (temporary)"}},
		{domain: "nxdomain.t", status: "nxdomain",
			text: []string{"the domain does not exist (NXDOMAIN)"}},
		{domain: "timeout.t", status: "temporary",
			text: []string{"DNS lookup failed temporarily"}},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			r := checkRun(t, Config{Domains: []string{c.domain}, Resolver: res, Timeout: 300 * time.Millisecond})
			if r.status.String() != c.status {
				t.Errorf("%v, want %s\n%s", r.status, c.status, r.table)
			}
			if len(r.json) != 1 {
				t.Fatalf("JSON has %d domains", len(r.json))
			}
			j := r.json[0]
			if j.Domain != c.domain || j.Status.String() != c.status {
				t.Errorf("JSON domain %q status %v, want %q %q", j.Domain, j.Status, c.domain, c.status)
			}
			if !strings.HasPrefix(r.table, c.domain+"\n") {
				t.Errorf("table does not start with the domain:\n%s", r.table)
			}
			for _, re := range c.rows {
				if !re.MatchString(r.table) {
					t.Errorf("table lacks a row matching %s:\n%s", re, r.table)
				}
			}
			for _, s := range c.text {
				if !strings.Contains(r.table, s) {
					t.Errorf("table lacks %q:\n%s", s, r.table)
				}
			}
			if c.check != nil && !c.check(j) {
				t.Errorf("JSON %+v", j)
			}
			var warnings []string
			warnings = append(warnings, j.Warnings...)
			for _, e := range j.Exchangers {
				warnings = append(warnings, e.Warnings...)
			}
			all := strings.Join(warnings, "\n")
			if c.warning != "" {
				if !strings.Contains(all, c.warning) {
					t.Errorf("JSON warnings %q lack %q", all, c.warning)
				}
				if !strings.Contains(r.table, "warning: ") {
					t.Errorf("table shows no warning:\n%s", r.table)
				}
			}
			if strings.Contains(r.table, "\x1b[") {
				t.Errorf("colours in a non-terminal table:\n%s", r.table)
			}
		})
	}
}

func TestWorstCodeAcrossDomains(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	for _, c := range []struct {
		domains []string
		status  Status
	}{
		{[]string{"q12801.t", "q13041.t"}, QMTP},
		{[]string{"q12801.t", "s12800.t"}, NoQMTP},
		{[]string{"nxdomain.t", "s12800.t", "q12801.t"}, NotFound},
		{[]string{"nxdomain.t", "servfail.t", "q12801.t"}, Temporary},
	} {
		r := checkRun(t, Config{Domains: c.domains, Resolver: res})
		if r.status != c.status || len(r.json) != len(c.domains) {
			t.Errorf("%v: %v (%d results), want %v", c.domains, r.status, len(r.json), c.status)
		}
		for i, d := range c.domains {
			if r.json[i].Domain != d || !strings.Contains(r.table, d+"\n") {
				t.Errorf("%v: result %d is %q", c.domains, i, r.json[i].Domain)
			}
		}
	}
}

// TestBinary runs the real binary with --resolver: exit codes, the
// table and --json as a script sees them.
func TestBinary(t *testing.T) {
	srv := dnstest.Start(t, zone())
	bin := testpeer.Binary(t)

	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--resolver", srv.Addr, "q12801.t"}, 0, "publishes 1 QMTP exchanger(s)"},
		{[]string{"--resolver", srv.Addr, "--json", "q13041.t"}, 0, `"class": "qmtp"`},
		{[]string{"--resolver", srv.Addr, "s12800.t"}, 1, "mxps-smtp"},
		{[]string{"--resolver", srv.Addr, "null.t"}, 1, "null MX"},
		{[]string{"--resolver", srv.Addr, "nxdomain.t"}, 100, "NXDOMAIN"},
		{[]string{"--resolver", srv.Addr, "--json", "nxdomain.t"}, 100, `"status": "nxdomain"`},
		{[]string{"--resolver", srv.Addr, "servfail.t"}, 111, "SERVFAIL"},
		{[]string{"--resolver", srv.Addr, "--timeout", "300ms", "timeout.t"}, 111, "temporary"},
		{[]string{"--resolver", srv.Addr, "q12801.t", "--json"}, 100, "options go before the first DOMAIN"},
		{[]string{"--resolver", srv.Addr}, 100, "no DOMAIN given"},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, append([]string{"mx-check"}, c.args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		code := testpeer.ExitCode(t, cmd.Run())
		if code != c.code || !strings.Contains(out.String(), c.out) {
			t.Errorf("mx-check %v: exit %d, want %d, output lacks %q?\n%s", c.args, code, c.code, c.out, out.String())
		}
		if strings.Contains(out.String(), "\x1b[") {
			t.Errorf("mx-check %v: colours on a pipe", c.args)
		}
	}
}

func TestColourOnlyWhenAsked(t *testing.T) {
	srv := dnstest.Start(t, zone())
	res := mxps.Server(srv.Addr, time.Second)
	var plain, coloured bytes.Buffer
	Run(context.Background(), Config{Domains: []string{"q12801.t"}, Resolver: res}, &plain)
	Run(context.Background(), Config{Domains: []string{"q12801.t"}, Resolver: res, Color: true}, &coloured)
	if strings.Contains(plain.String(), "\x1b[") || !strings.Contains(coloured.String(), green+"qmtp"+reset) {
		t.Fatalf("plain:\n%s\ncoloured:\n%q", plain.String(), coloured.String())
	}
}

// TestSystemResolverDefault runs without --resolver: the system
// resolver. This machine has no Internet; an unknown name under the
// reserved .invalid TLD must never be reported as having QMTP.
func TestSystemResolverDefault(t *testing.T) {
	var out bytes.Buffer
	status, err := Run(context.Background(), Config{Domains: []string{"qbox-mx-check.invalid"}, Timeout: 3 * time.Second}, &out)
	if err != nil || (status != NotFound && status != Temporary) {
		t.Fatalf("%v, %v\n%s", status, err, out.String())
	}
}
