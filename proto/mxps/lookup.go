package mxps

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
)

// Report is what DNS says about where a domain's mail goes.
type Report struct {
	Domain string `json:"domain"`
	// CNAME is the domain's canonical name when it is an alias.
	CNAME string `json:"cname,omitempty"`
	// Null is RFC 7505's null MX: the domain accepts no mail.
	Null bool `json:"null_mx"`
	// Implicit is true when the domain has no MX records and its own
	// address records act as an MX of preference 0 (RFC 5321 §5.1).
	Implicit bool `json:"implicit_mx"`
	// Exchangers in the order a sender tries them (RFC 5321: by
	// preference, random among equal preferences).
	Exchangers []Exchanger `json:"exchangers"`
	Warnings   []string    `json:"warnings,omitempty"`
}

// Exchanger is one MX target with its addresses.
type Exchanger struct {
	Pref  uint16 `json:"preference"`
	Host  string `json:"host"`
	Class Class  `json:"class"`
	// CNAME is set when the host is an alias, which an MX must not be.
	CNAME string `json:"cname,omitempty"`
	// Literal is set when the "host" is an address written as a name.
	Literal bool         `json:"address_literal,omitempty"`
	Addrs   []netip.Addr `json:"addresses"`
	// AddrErr is why the addresses could not be (fully) looked up.
	AddrErr  error    `json:"-"`
	Warnings []string `json:"warnings,omitempty"`
}

// QMTP reports whether the exchanger is in MXPS's QMTP slice.
func (e Exchanger) QMTP() bool { return e.Class == QMTP }

// TemporaryAddrErr reports whether the exchanger's address lookup failed
// temporarily (SERVFAIL, timeout), so its absence of addresses may change.
func (e Exchanger) TemporaryAddrErr() bool {
	var de *DNSError
	return errors.As(e.AddrErr, &de) && de.Temporary
}

// Lookup reports domain's exchangers. The error is a *DNSError when the
// MX query failed: NotFound when the domain does not exist, Temporary
// when DNS could not answer now. Problems with single exchangers (no
// address, an alias, an unassigned preference) are warnings in the report.
func Lookup(ctx context.Context, r Resolver, domain string) (Report, error) {
	return LookupOrdered(ctx, r, domain, nil)
}

// LookupOrdered is Lookup with the random source that orders equal
// preferences (nil: the process's).
func LookupOrdered(ctx context.Context, r Resolver, domain string, rnd *rand.Rand) (Report, error) {
	domain = trimDot(strings.TrimSpace(domain))
	rep := Report{Domain: domain}
	ans, err := r.LookupMX(ctx, domain)
	if err != nil {
		var de *DNSError
		if !errors.As(err, &de) || !de.NotFound {
			return rep, err
		}
		// Not found: the system resolver says so also for a domain with
		// addresses but no MX, which has an implicit MX.
		addrs, aerr := r.LookupAddrs(ctx, domain)
		if aerr != nil || len(addrs.Addrs) == 0 {
			return rep, err
		}
		rep.Implicit = true
		rep.CNAME = addrs.CNAME
		rep.Exchangers = []Exchanger{{Pref: 0, Host: domain, Class: SMTP, Addrs: addrs.Addrs}}
		return rep, nil
	}
	rep.CNAME = ans.CNAME

	var records []MX
	for _, m := range ans.Records {
		if m.IsNull() {
			continue
		}
		records = append(records, m)
	}
	if len(records) < len(ans.Records) {
		if len(records) == 0 {
			rep.Null = true
			return rep, nil
		}
		rep.Warnings = append(rep.Warnings, "null MX (RFC 7505) published beside other MX records; it is ignored")
	}

	if len(ans.Records) == 0 {
		// No MX: the domain's own addresses are an MX of preference 0.
		rep.Implicit = true
		ex := Exchanger{Pref: 0, Host: domain, Class: SMTP}
		addrs, aerr := r.LookupAddrs(ctx, domain)
		ex.Addrs, ex.AddrErr = addrs.Addrs, aerr
		if aerr != nil {
			var de *DNSError
			if errors.As(aerr, &de) && de.Temporary && len(addrs.Addrs) == 0 {
				return rep, aerr
			}
		}
		if len(ex.Addrs) == 0 {
			rep.Warnings = append(rep.Warnings, "no MX records and no address: mail to this domain cannot be delivered")
		}
		rep.Exchangers = []Exchanger{ex}
		return rep, nil
	}

	for _, m := range Order(records, rnd) {
		rep.Exchangers = append(rep.Exchangers, exchanger(ctx, r, m))
	}
	return rep, nil
}

func exchanger(ctx context.Context, r Resolver, m MX) Exchanger {
	ex := Exchanger{Pref: m.Pref, Host: m.Host, Class: Classify(m.Pref)}
	if ex.Class == Unassigned {
		ex.Warnings = append(ex.Warnings, fmt.Sprintf("preference %d is unassigned by MXPS (%s); senders may treat it as SMTP", m.Pref, unassignedWhy(m.Pref)))
	}
	if a, ok := addressLiteral(m.Host); ok {
		ex.Literal = true
		ex.Warnings = append(ex.Warnings, "MX points at an address literal, not a host name (RFC 5321 §5.1 wants a name); many senders refuse it")
		// Look the name up anyway: it is what a strict sender would do.
		ans, err := r.LookupAddrs(ctx, m.Host)
		ex.Addrs, ex.AddrErr = ans.Addrs, err
		if len(ex.Addrs) == 0 {
			ex.AddrErr = nil
			ex.Warnings = append(ex.Warnings, fmt.Sprintf("the name %s has no address records; senders that accept address literals would connect to %s", m.Host, a))
		}
		return ex
	}
	ans, err := r.LookupAddrs(ctx, m.Host)
	ex.Addrs, ex.AddrErr, ex.CNAME = ans.Addrs, err, ans.CNAME
	if ans.CNAME != "" {
		ex.Warnings = append(ex.Warnings, fmt.Sprintf("MX points at an alias (CNAME to %s); RFC 2181 §10.3 and RFC 5321 §5.1 forbid it", ans.CNAME))
	}
	switch {
	case err != nil:
		ex.Warnings = append(ex.Warnings, "address lookup failed: "+err.Error())
	case len(ans.Addrs) == 0:
		ex.Warnings = append(ex.Warnings, "host has no A or AAAA record")
	}
	return ex
}

func unassignedWhy(pref uint16) string {
	if s, ok := Slice(pref); ok {
		return fmt.Sprintf("reserved slice #%d", s)
	}
	if pref < FirstExperimental {
		return "between SMTP's 0–10000 and the experimental 12800–13055"
	}
	return "above the experimental 12800–13055"
}

// addressLiteral reports whether host is an IP address written where a
// name belongs ("192.0.2.1" or "[192.0.2.1]").
func addressLiteral(host string) (netip.Addr, bool) {
	h := strings.TrimSuffix(host, ".")
	h = strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")
	h = strings.TrimPrefix(strings.TrimPrefix(h, "IPv6:"), "ipv6:")
	a, err := netip.ParseAddr(h)
	return a, err == nil
}

// HasQMTP reports whether any exchanger is in the QMTP slice.
func (r Report) HasQMTP() bool {
	for _, e := range r.Exchangers {
		if e.QMTP() {
			return true
		}
	}
	return false
}

// AllAttempts lists every connection a full MXPS sender (QMTP and SMTP)
// may make for the report, in order: per exchanger address, the attempts
// Attempts gives.
func AllAttempts(r Report, ports Ports) []Attempt {
	var out []Attempt
	for _, e := range r.Exchangers {
		for _, a := range e.Addrs {
			out = append(out, Attempts(e.Pref, e.Host, a.String(), ports)...)
		}
	}
	return out
}
