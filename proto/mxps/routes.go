package mxps

// Routing as qmail-remote does it, with the QMTP routes of the qmtpc
// patches: control/smtproutes and control/qmtproutes override DNS, an MX
// lookup (the implicit MX when there is none) finds the exchangers
// otherwise, and MXPS decides which of them get QMTP first.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
)

// MaxRoutesFile bounds a routes control file: tens of thousands of
// routes, far more than any site has, and a bound on what a corrupt or
// hostile file can make qbox hold.
const MaxRoutesFile = 4 << 20

// Routes is one routes control file (control/smtproutes or
// control/qmtproutes): lines "domain:relay" or "domain:relay:port".
type Routes struct {
	m map[string]string // lower-cased domain → relay[:port]
}

// ParseRoutes reads a routes file as qmail's control_readfile and
// constmap read it: trailing spaces and tabs stripped, empty lines and
// lines starting with '#' skipped, a line without ':' ignored, the
// domain matched without regard to case, and the last line for a domain
// winning. A file over MaxRoutesFile bytes is an error.
func ParseRoutes(data []byte) (Routes, error) {
	if len(data) > MaxRoutesFile {
		return Routes{}, fmt.Errorf("routes file of %d bytes, more than %d", len(data), MaxRoutesFile)
	}
	r := Routes{m: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxRoutesFile+1)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		domain, relay, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		r.m[strings.ToLower(domain)] = relay
	}
	return r, sc.Err()
}

// Route is where a routes file sends a host's mail.
type Route struct {
	Protocol Protocol // ProtoSMTP (smtproutes) or ProtoQMTP (qmtproutes)
	// Domain is the key that matched: the host, a ".suffix" of it, or ""
	// (the default route).
	Domain string
	// Relay is the relay's name or address ("[192.0.2.1]" or bare); ""
	// means the route says "use DNS" (a line "domain:"), which ends the
	// search as in qmail-remote.
	Relay string
	// Port is the route's port, "" for the protocol's own.
	Port string
	// TLS: a qmtproutes entry whose port is written with an "s" before
	// it ("domain:relay:s6209", or "domain:relay:s" for QMTPS's port
	// 6209), as s/qmail writes implicit TLS: QMTPS, TLS from the first
	// byte with the relay's certificate verified.
	TLS bool
}

// QMTPSPort is QMTPS's port (s/qmail's).
const QMTPSPort = "6209"

// FindRoute looks host up as qmail-remote looks it up in smtproutes: the
// host itself, then each suffix starting at a dot (".example.com" for
// "mail.example.com"), then "" (the default route); the first key found
// decides. At each key qmtproutes is asked before smtproutes, so the most
// specific route wins and, between equally specific ones, QMTP.
func FindRoute(host string, qmtp, smtp Routes) (Route, bool) {
	h := strings.ToLower(host)
	for i := 0; i <= len(h); i++ {
		if i != 0 && i != len(h) && h[i] != '.' {
			continue
		}
		key := h[i:]
		for _, f := range []struct {
			r Routes
			p Protocol
		}{{qmtp, ProtoQMTP}, {smtp, ProtoSMTP}} {
			relay, ok := f.r.m[key]
			if !ok {
				continue
			}
			rt := Route{Protocol: f.p, Domain: key}
			rt.Relay, rt.Port = splitRelay(relay)
			if f.p == ProtoQMTP && strings.HasPrefix(rt.Port, "s") {
				rt.TLS, rt.Port = true, strings.TrimPrefix(rt.Port, "s")
				if rt.Port == "" {
					rt.Port = QMTPSPort
				}
			}
			return rt, true
		}
	}
	return Route{}, false
}

// splitRelay splits "relay:port" ("[v6]:port" too) at the port.
func splitRelay(relay string) (string, string) {
	if strings.HasPrefix(relay, "[") {
		if end := strings.IndexByte(relay, ']'); end >= 0 {
			rest := relay[end+1:]
			if port, ok := strings.CutPrefix(rest, ":"); ok {
				return relay[:end+1], port
			}
			return relay[:end+1], ""
		}
	}
	host, port, _ := strings.Cut(relay, ":")
	return host, port
}

// ErrNullMX is a domain whose null MX (RFC 7505) says it takes no mail.
var ErrNullMX = errors.New("the domain accepts no mail (null MX)")

// ErrNoAddress is a route or exchangers without any address now.
var ErrNoAddress = errors.New("no address to connect to")

// RouteError is a route that cannot be used: a bad port, a relay that is
// no host name.
type RouteError struct {
	Route Route
	Err   error
}

func (e *RouteError) Error() string {
	return fmt.Sprintf("%s route for %q: %v", strings.ToLower(string(e.Route.Protocol)), e.Route.Domain, e.Err)
}

func (e *RouteError) Unwrap() error { return e.Err }

// Plan is where mail for a host goes: the connections to try, in order,
// under MXPS's rule (Dialer.Deliver walks them).
type Plan struct {
	Attempts []Attempt
	// Route is the routes-file entry used, if any.
	Route *Route
	// Host is the name whose addresses were looked up: the relay of a
	// route, else the host itself.
	Host string
}

// PlanDelivery decides where mail for host goes, as qmail-remote with
// the qmtpc patches does: a route from qmtproutes or smtproutes
// (FindRoute) sends it to that relay (its addresses, never its MX) over
// that protocol only, at the route's port or the protocol's; otherwise
// "[address]" is that address over SMTP, and a name's exchangers come
// from an MX lookup (the implicit MX when it has none), each tried as
// MXPS says (Attempts: QMTP first for the QMTP slice, SMTP on a failed
// connect). rnd orders equal preferences (nil: the process's source).
//
// Errors: a *DNSError from the MX or relay lookup (NotFound: the name
// does not exist; Temporary otherwise), ErrNullMX, ErrNoAddress, or a
// *RouteError.
func PlanDelivery(ctx context.Context, r Resolver, host string, qmtp, smtp Routes, ports Ports, rnd *rand.Rand) (Plan, error) {
	if rt, ok := FindRoute(host, qmtp, smtp); ok && rt.Relay != "" {
		return planRoute(ctx, r, rt, ports)
	}
	plan := Plan{Host: host}
	if a, ok := bracketLiteral(host); ok {
		plan.Attempts = []Attempt{{Protocol: ProtoSMTP, Addr: joinHostPort(a.String(), ports.smtp()), Host: host}}
		return plan, nil
	}
	rep, err := LookupOrdered(ctx, r, host, rnd)
	if err != nil {
		return plan, err
	}
	if rep.Null {
		return plan, ErrNullMX
	}
	plan.Attempts = AllAttempts(rep, ports)
	if len(plan.Attempts) == 0 {
		// An exchanger whose address lookup failed temporarily says why.
		for _, e := range rep.Exchangers {
			if e.TemporaryAddrErr() {
				return plan, e.AddrErr
			}
		}
		return plan, ErrNoAddress
	}
	return plan, nil
}

func planRoute(ctx context.Context, r Resolver, rt Route, ports Ports) (Plan, error) {
	plan := Plan{Route: &rt, Host: rt.Relay}
	port := ports.smtp()
	if rt.Protocol == ProtoQMTP {
		port = ports.qmtp()
	}
	if rt.Port != "" {
		n, err := strconv.ParseUint(rt.Port, 10, 16)
		if err != nil || n == 0 {
			return plan, &RouteError{Route: rt, Err: fmt.Errorf("port %q is not a TCP port", rt.Port)}
		}
		port = strconv.FormatUint(n, 10)
	}
	var addrs []netip.Addr
	if a, ok := addressLiteral(rt.Relay); ok {
		addrs = []netip.Addr{a}
	} else {
		if strings.ContainsAny(rt.Relay, " \t\r\n\x00/") {
			return plan, &RouteError{Route: rt, Err: fmt.Errorf("relay %q is not a host name", rt.Relay)}
		}
		ans, err := r.LookupAddrs(ctx, rt.Relay)
		if err != nil && len(ans.Addrs) == 0 {
			return plan, err
		}
		addrs = ans.Addrs
	}
	for _, a := range addrs {
		plan.Attempts = append(plan.Attempts, Attempt{Protocol: rt.Protocol, Addr: joinHostPort(a.String(), port), Host: rt.Relay, TLS: rt.TLS})
	}
	if len(plan.Attempts) == 0 {
		return plan, ErrNoAddress
	}
	return plan, nil
}

// bracketLiteral reads qmail's address literal "[192.0.2.1]" (and
// "[IPv6:2001:db8::1]"); a bare address is a name to qmail-remote.
func bracketLiteral(host string) (netip.Addr, bool) {
	if !strings.HasPrefix(host, "[") || !strings.HasSuffix(host, "]") {
		return netip.Addr{}, false
	}
	return addressLiteral(host)
}
