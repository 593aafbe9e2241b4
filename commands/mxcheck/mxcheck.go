// Package mxcheck is `qbox mx-check`: does this domain receive mail over
// QMTP (MXPS)? It lists the domain's MX records in the order a sender
// tries them, with each preference's MXPS slice and the exchangers'
// addresses; reports the implicit MX and RFC 7505's null MX; warns about
// unassigned preferences, MX targets that are aliases or address
// literals; and with --probe checks that every address of a QMTP
// exchanger answers on 209 and on 25, as MXPS requires.
package mxcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"qbox/commands/exitcode"
	"strings"
	"text/tabwriter"
	"time"

	"qbox/proto/mxps"
	"qbox/proto/probe"
)

// Status is a domain's verdict, worst last: the run's is the worst
// domain's (max). JSON carries its name.
type Status int

const (
	QMTP      Status = iota // "qmtp": at least one QMTP exchanger with an address (with --probe: answering on 209)
	NoQMTP                  // "no-qmtp": none
	NotFound                // "nxdomain": the domain does not exist
	Temporary               // "temporary": DNS could not answer now
)

var statusNames = []string{QMTP: "qmtp", NoQMTP: "no-qmtp", NotFound: "nxdomain", Temporary: "temporary"}

func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText writes the status's name.
func (s Status) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(statusNames) {
		return nil, fmt.Errorf("mx-check: no status %d", int(s))
	}
	return []byte(statusNames[s]), nil
}

// UnmarshalText reads a status's name.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if string(b) == n {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("mx-check: no status %q", b)
}

// Verdict is what the status means to a monitoring system;
// exitcode.MXCheck numbers it: 0 qmtp, 1 no-qmtp, 100 nxdomain, 111
// temporary.
func (s Status) Verdict() exitcode.Verdict {
	switch s {
	case QMTP:
		return exitcode.VerdictOK
	case NoQMTP:
		return exitcode.VerdictWarning
	case NotFound:
		return exitcode.VerdictCritical
	}
	return exitcode.VerdictUnknown
}

// Config is one run of mx-check.
type Config struct {
	Domains  []string
	Resolver mxps.Resolver // nil: the system resolver
	Probe    bool
	JSON     bool
	Color    bool
	// Timeout bounds each domain's DNS lookups and each probe connect.
	Timeout time.Duration
	// Wait is how long a probe listens for a greeting.
	Wait time.Duration
	// Ports overrides 209 and 25 for --probe (tests, non-standard setups).
	Ports mxps.Ports
	// Source is the local address probes connect from.
	Source string
	// Rand orders equal preferences (tests); nil: random.
	Rand *rand.Rand
}

// DomainResult is one domain's report, as JSON and for the table.
type DomainResult struct {
	Domain     string          `json:"domain"`
	CNAME      string          `json:"cname,omitempty"`
	Status     Status          `json:"status"` // qmtp, no-qmtp, nxdomain, temporary
	Error      string          `json:"error,omitempty"`
	NullMX     bool            `json:"null_mx"`
	ImplicitMX bool            `json:"implicit_mx"`
	Exchangers []ExchangerJSON `json:"exchangers"`
	Warnings   []string        `json:"warnings,omitempty"`
	Summary    string          `json:"summary"`
}

// ExchangerJSON is one MX target.
type ExchangerJSON struct {
	Preference   uint16        `json:"preference"`
	Host         string        `json:"host"`
	Class        mxps.Class    `json:"class"`
	Slice        *int          `json:"slice"` // pref mod 16 in 12800–13055, else null
	CNAME        string        `json:"cname,omitempty"`
	Literal      bool          `json:"address_literal,omitempty"`
	Addresses    []AddressJSON `json:"addresses"`
	AddressError string        `json:"address_error,omitempty"`
	Warnings     []string      `json:"warnings,omitempty"`
}

// AddressJSON is one address of an exchanger, with --probe's results for
// a QMTP exchanger's address.
type AddressJSON struct {
	Address string            `json:"address"`
	QMTP    *probe.PortResult `json:"qmtp,omitempty"`
	SMTP    *probe.PortResult `json:"smtp,omitempty"`
}

// Run checks every domain and writes the report to w. It returns the
// worst domain's status.
func Run(ctx context.Context, cfg Config, w io.Writer) (Status, error) {
	if len(cfg.Domains) == 0 {
		return QMTP, errors.New("no DOMAIN given")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = mxps.System()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	var results []DomainResult
	worst := QMTP
	for _, d := range cfg.Domains {
		r := check(ctx, cfg, d)
		results = append(results, r)
		worst = max(worst, r.Status)
	}
	if cfg.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return worst, enc.Encode(results)
	}
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := writeDomain(w, r, cfg); err != nil {
			return worst, err
		}
	}
	return worst, nil
}

func check(ctx context.Context, cfg Config, domain string) DomainResult {
	lctx, cancel := context.WithTimeout(ctx, 3*cfg.Timeout)
	rep, err := mxps.LookupOrdered(lctx, cfg.Resolver, domain, cfg.Rand)
	cancel()
	res := DomainResult{Domain: rep.Domain, CNAME: rep.CNAME, NullMX: rep.Null, ImplicitMX: rep.Implicit, Warnings: rep.Warnings, Exchangers: []ExchangerJSON{}}
	if err != nil {
		res.Error = err.Error()
		var de *mxps.DNSError
		if errors.As(err, &de) && de.NotFound {
			res.Status = NotFound
			res.Summary = "the domain does not exist (NXDOMAIN)"
		} else {
			res.Status = Temporary
			res.Summary = "DNS lookup failed temporarily; try again later"
		}
		return res
	}

	var prober *probe.Prober
	if cfg.Probe {
		prober = &probe.Prober{Source: cfg.Source, ConnectTimeout: cfg.Timeout, Wait: cfg.Wait}
	}
	qmtpWithAddr, answering, tempAddr := 0, 0, false
	for _, e := range rep.Exchangers {
		ej := ExchangerJSON{Preference: e.Pref, Host: e.Host, Class: e.Class, CNAME: e.CNAME, Literal: e.Literal, Warnings: e.Warnings, Addresses: []AddressJSON{}}
		if s, ok := mxps.Slice(e.Pref); ok && !rep.Implicit {
			ej.Slice = &s
		}
		if e.AddrErr != nil {
			ej.AddressError = e.AddrErr.Error()
		}
		if e.QMTP() {
			if len(e.Addrs) > 0 {
				qmtpWithAddr++
			}
			if e.TemporaryAddrErr() {
				tempAddr = true
			}
		}
		for _, a := range e.Addrs {
			aj := AddressJSON{Address: a.String()}
			if prober != nil && e.QMTP() {
				q, s := probeAddress(ctx, prober, cfg.Ports, e, a.String())
				aj.QMTP, aj.SMTP = &q, &s
				if q.Verdict == probe.OK {
					answering++
				}
				if q.Verdict != probe.OK || s.Verdict != probe.OK {
					ej.Warnings = append(ej.Warnings, fmt.Sprintf("%s: MXPS requires QMTP on %s and SMTP on %s at every address of a QMTP exchanger: %s",
						a, q.Addr, s.Addr, brokenPorts(q, s)))
				}
			}
			ej.Addresses = append(ej.Addresses, aj)
		}
		res.Exchangers = append(res.Exchangers, ej)
	}

	switch {
	case rep.Null:
		res.Status = NoQMTP
		res.Summary = "null MX (RFC 7505): the domain accepts no mail"
	case cfg.Probe && answering > 0:
		res.Status = QMTP
		res.Summary = fmt.Sprintf("receives mail over QMTP: %d QMTP exchanger address(es) answer on %s", answering, portOr(cfg.Ports.QMTP, mxps.QMTPPort))
	case cfg.Probe && qmtpWithAddr > 0:
		res.Status = NoQMTP
		res.Summary = fmt.Sprintf("QMTP exchangers published, but none answers on %s", portOr(cfg.Ports.QMTP, mxps.QMTPPort))
	case !cfg.Probe && qmtpWithAddr > 0:
		res.Status = QMTP
		res.Summary = fmt.Sprintf("publishes %d QMTP exchanger(s) (MXPS)", qmtpWithAddr)
	case tempAddr:
		res.Status = Temporary
		res.Summary = "QMTP exchangers published, but their addresses could not be looked up now; try again later"
	case rep.HasQMTP():
		res.Status = NoQMTP
		res.Summary = "QMTP exchangers published, but none has an address"
	case rep.Implicit:
		res.Status = NoQMTP
		res.Summary = "no MX records: mail goes to the domain's own address over SMTP (implicit MX); no QMTP"
	default:
		res.Status = NoQMTP
		res.Summary = "no QMTP exchanger: mail goes over SMTP"
	}
	return res
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

func probeAddress(ctx context.Context, p *probe.Prober, ports mxps.Ports, e mxps.Exchanger, addr string) (probe.PortResult, probe.PortResult) {
	attempts := mxps.Attempts(e.Pref, e.Host, addr, ports)
	var q, s probe.PortResult
	done := make(chan struct{})
	// Both ports at once: each may wait the whole greeting window.
	go func() {
		defer close(done)
		q = p.Port(ctx, attempts[0].Addr, probe.QMTP)
	}()
	s = p.Port(ctx, attempts[1].Addr, probe.SMTP)
	<-done
	return q, s
}

func brokenPorts(q, s probe.PortResult) string {
	var parts []string
	for _, r := range []probe.PortResult{q, s} {
		if r.Verdict != probe.OK {
			parts = append(parts, fmt.Sprintf("%s %s (%s)", r.Addr, r.State, r.Note))
		}
	}
	return strings.Join(parts, "; ")
}

const (
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	red    = "\x1b[31m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

func paint(on bool, color, s string) string {
	if !on {
		return s
	}
	return color + s + reset
}

func writeDomain(w io.Writer, r DomainResult, cfg Config) error {
	c := cfg.Color
	head := r.Domain
	if r.CNAME != "" {
		head += " (alias of " + r.CNAME + ")"
	}
	fmt.Fprintln(w, paint(c, bold, head))
	switch {
	case r.Error != "":
		fmt.Fprintf(w, "  %s\n", paint(c, red, r.Error))
	case r.NullMX:
		fmt.Fprintln(w, "  MX 0 . (null MX, RFC 7505)")
	case len(r.Exchangers) > 0:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if cfg.Probe {
			fmt.Fprintln(tw, "  PREF\tSLICE\tCLASS\tHOST\tADDRESS\tQMTP\tSMTP")
		} else {
			fmt.Fprintln(tw, "  PREF\tSLICE\tCLASS\tHOST\tADDRESSES")
		}
		for _, e := range r.Exchangers {
			slice := "-"
			if e.Slice != nil {
				slice = fmt.Sprintf("#%d", *e.Slice)
			}
			class := e.Class.String()
			if r.ImplicitMX {
				class = "smtp (implicit MX)"
			}
			switch e.Class {
			case mxps.QMTP:
				class = paint(c, green, class)
			case mxps.Unassigned:
				class = paint(c, yellow, class)
			}
			host := e.Host
			if e.CNAME != "" {
				host += " -> " + e.CNAME
			}
			row := fmt.Sprintf("  %d\t%s\t%s\t%s", e.Preference, slice, class, host)
			if !cfg.Probe {
				var as []string
				for _, a := range e.Addresses {
					as = append(as, a.Address)
				}
				if len(as) == 0 {
					as = []string{"(none)"}
				}
				fmt.Fprintf(tw, "%s\t%s\n", row, strings.Join(as, " "))
				continue
			}
			if len(e.Addresses) == 0 {
				fmt.Fprintf(tw, "%s\t(none)\t\t\n", row)
				continue
			}
			for i, a := range e.Addresses {
				if i > 0 {
					row = "  \t\t\t"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row, a.Address, portCell(a.QMTP, c), portCell(a.SMTP, c))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(w, "  %s %s\n", paint(c, yellow, "warning:"), wn)
	}
	for _, e := range r.Exchangers {
		for _, wn := range e.Warnings {
			fmt.Fprintf(w, "  %s %s: %s\n", paint(c, yellow, "warning:"), e.Host, wn)
		}
	}
	color := green
	if r.Status != QMTP {
		color = red
	}
	_, err := fmt.Fprintf(w, "  %s\n", paint(c, color, r.Summary))
	return err
}

func portCell(r *probe.PortResult, c bool) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%s %.1fms", r.State, r.ConnectMS)
	if r.State == probe.Open {
		switch {
		case r.Heard == probe.SMTPBanner:
			s = fmt.Sprintf("open, %d banner", r.SMTPCode)
		case r.Heard == probe.Silence:
			s = "open, silent"
		default:
			s = "open, " + string(r.Heard)
		}
	}
	if r.Verdict == probe.OK {
		return paint(c, green, s)
	}
	return paint(c, red, s)
}

// WithDefaultPort adds DNS's port 53 to a --resolver address without one.
func WithDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "53")
}
