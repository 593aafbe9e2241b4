package mxps

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Resolver answers the two questions an MX report needs. Names are given
// and returned without a trailing dot.
type Resolver interface {
	// LookupMX returns name's MX records in the order received. A name
	// that exists but has no MX records gives no records and no error
	// when the resolver can tell (Server can; the system resolver may
	// report it as not found).
	LookupMX(ctx context.Context, name string) (MXAnswer, error)
	// LookupAddrs returns name's A and AAAA addresses.
	LookupAddrs(ctx context.Context, name string) (AddrAnswer, error)
}

// MXAnswer is the answer to an MX query.
type MXAnswer struct {
	Records []MX
	// CNAME is the canonical name when the queried name is an alias
	// (allowed for a mail domain; the MX records are the target's).
	CNAME string
}

// AddrAnswer is the answer to the A and AAAA queries for one name.
type AddrAnswer struct {
	Addrs []netip.Addr
	// CNAME is the canonical name when the queried name is an alias. An
	// MX must not point at an alias (RFC 2181 §10.3, RFC 5321 §5.1).
	CNAME string
}

// DNSError is a failed lookup, classified the way mail cares about: the
// name does not exist (permanent), or the answer could not be had now
// (temporary: SERVFAIL, REFUSED, a timeout, an unreachable server).
type DNSError struct {
	Name      string
	Type      string // "MX", "A", "AAAA", "A/AAAA"
	Server    string // empty for the system resolver
	NotFound  bool   // NXDOMAIN (or, from the system resolver, no such records)
	Temporary bool
	Rcode     string // the DNS response code, when there was a response
	Err       error
}

func (e *DNSError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Type, e.Name)
	if e.Server != "" {
		fmt.Fprintf(&b, " at %s", e.Server)
	}
	switch {
	case e.NotFound:
		b.WriteString(": no such domain")
	case e.Rcode != "":
		fmt.Fprintf(&b, ": %s", e.Rcode)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Temporary {
		b.WriteString(" (temporary)")
	}
	return b.String()
}

func (e *DNSError) Unwrap() error { return e.Err }

// System returns a Resolver using Go's resolver (the system's
// configuration: /etc/resolv.conf, or the C library when Go defers to it).
func System() Resolver { return systemResolver{r: net.DefaultResolver} }

type systemResolver struct{ r *net.Resolver }

func (s systemResolver) LookupMX(ctx context.Context, name string) (MXAnswer, error) {
	mxs, err := s.r.LookupMX(ctx, name)
	if err != nil && len(mxs) == 0 {
		return MXAnswer{}, systemError(name, "MX", err)
	}
	// Go returns well-formed records with an error when others were
	// malformed; keep what is usable.
	ans := MXAnswer{}
	for _, m := range mxs {
		ans.Records = append(ans.Records, MX{Pref: m.Pref, Host: trimDot(m.Host)})
	}
	if cname, err := s.r.LookupCNAME(ctx, name); err == nil && !sameName(cname, name) {
		ans.CNAME = trimDot(cname)
	}
	return ans, nil
}

func (s systemResolver) LookupAddrs(ctx context.Context, name string) (AddrAnswer, error) {
	ips, err := s.r.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return AddrAnswer{}, systemError(name, "A/AAAA", err)
	}
	ans := AddrAnswer{}
	for _, ip := range ips {
		ans.Addrs = append(ans.Addrs, ip.Unmap())
	}
	if cname, err := s.r.LookupCNAME(ctx, name); err == nil && !sameName(cname, name) {
		ans.CNAME = trimDot(cname)
	}
	return ans, nil
}

func systemError(name, typ string, err error) error {
	e := &DNSError{Name: name, Type: typ, Err: err}
	var de *net.DNSError
	if errors.As(err, &de) {
		e.NotFound = de.IsNotFound
		e.Temporary = !de.IsNotFound && (de.IsTemporary || de.IsTimeout)
		e.Err = errors.New(de.Err)
		if e.NotFound {
			e.Err = nil // "no such host" says it again
		}
	} else {
		e.Temporary = true
	}
	if !e.NotFound {
		// Anything we cannot classify is retried, never bounced.
		e.Temporary = true
	}
	return e
}

// Server returns a Resolver that asks the DNS server at addr (host:port)
// directly, over UDP with a TCP retry on truncation, with recursion
// desired. Unlike the system resolver it tells NXDOMAIN from an empty
// answer and SERVFAIL from a timeout, and sees CNAMEs. timeout bounds each
// query (0 means 5s).
func Server(addr string, timeout time.Duration) Resolver {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &serverResolver{addr: addr, timeout: timeout}
}

type serverResolver struct {
	addr    string
	timeout time.Duration
}

// maxCNAMEHops bounds how long an alias chain is followed.
const maxCNAMEHops = 8

func (s *serverResolver) LookupMX(ctx context.Context, name string) (MXAnswer, error) {
	rrs, cname, err := s.query(ctx, name, dns.TypeMX)
	if err != nil {
		return MXAnswer{}, err
	}
	ans := MXAnswer{CNAME: cname}
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			ans.Records = append(ans.Records, MX{Pref: mx.Preference, Host: trimDot(mx.Mx)})
		}
	}
	return ans, nil
}

func (s *serverResolver) LookupAddrs(ctx context.Context, name string) (AddrAnswer, error) {
	var ans AddrAnswer
	var errs []*DNSError
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, cname, err := s.query(ctx, name, qtype)
		if err != nil {
			var de *DNSError
			if errors.As(err, &de) {
				errs = append(errs, de)
			} else {
				return AddrAnswer{}, err
			}
			continue
		}
		if cname != "" {
			ans.CNAME = cname
		}
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					ans.Addrs = append(ans.Addrs, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
					ans.Addrs = append(ans.Addrs, a)
				}
			}
		}
	}
	if len(errs) == 0 {
		return ans, nil
	}
	// Both NXDOMAIN: the name does not exist. Any temporary failure makes
	// the whole answer temporary (returned with what was found).
	for _, e := range errs {
		if e.Temporary {
			return ans, e
		}
	}
	return ans, errs[0]
}

// query asks for name's records of qtype, following an alias chain (also
// when the server does not include the target's records). It returns the
// records owned by the final name and that name if it differs.
func (s *serverResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, string, error) {
	typ := dns.TypeToString[qtype]
	qname := dns.Fqdn(name)
	cname := ""
	for hop := 0; hop <= maxCNAMEHops; hop++ {
		resp, err := s.exchange(ctx, qname, qtype)
		if err != nil {
			return nil, "", &DNSError{Name: name, Type: typ, Server: s.addr, Temporary: true, Err: err}
		}
		rrs, owner := answerRecords(resp, qname, qtype)
		if !strings.EqualFold(owner, dns.Fqdn(name)) {
			cname = trimDot(owner)
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return nil, cname, &DNSError{Name: name, Type: typ, Server: s.addr, NotFound: true, Rcode: "NXDOMAIN"}
		default:
			return nil, cname, &DNSError{Name: name, Type: typ, Server: s.addr, Temporary: true, Rcode: dns.RcodeToString[resp.Rcode]}
		}
		if len(rrs) > 0 || strings.EqualFold(owner, qname) {
			return rrs, cname, nil
		}
		// The server gave the alias but not the target's records (an
		// authoritative server outside the target's zone): ask again.
		qname = owner
	}
	return nil, cname, &DNSError{Name: name, Type: typ, Server: s.addr, Temporary: true, Err: errors.New("CNAME chain too long")}
}

// answerRecords follows the alias chain the answer section gives, from
// qname, and returns the records of qtype owned by its end and that end.
// Chains longer than maxCNAMEHops and loops stop there.
func answerRecords(resp *dns.Msg, qname string, qtype uint16) ([]dns.RR, string) {
	owner := qname
	for seen := 0; seen < maxCNAMEHops; seen++ {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
				next = c.Target
				break
			}
		}
		if next == "" {
			break
		}
		owner = next
	}
	var rrs []dns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, owner) {
			rrs = append(rrs, rr)
		}
	}
	return rrs, owner
}

func (s *serverResolver) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: s.timeout}
	resp, _, err := c.ExchangeContext(ctx, m, s.addr)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, s.addr)
	}
	if err != nil {
		return nil, err
	}
	if resp.Id != m.Id || len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, qname) || resp.Question[0].Qtype != qtype {
		return nil, errors.New("response does not match the question")
	}
	return resp, nil
}

func trimDot(s string) string {
	if len(s) > 1 {
		return strings.TrimSuffix(s, ".")
	}
	return s
}

func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
