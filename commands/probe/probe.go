// Package probe is `qbox probe`: what is really listening on a host's
// QMQP (628), QMTP (209) and SMTP (25) ports. By default it is harmless:
// it connects, listens for what the server says first, and leaves before
// sending a byte of mail. --send submits one small test message and
// reports the reply with its timings, as swaks does for SMTP.
//
// This package is the command: flags, targets, the table and the exit
// status. What speaks on a port, and the test message, are qbox/proto/probe.
package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto/probe"
	"qbox/proto/qmail/control"
	"qbox/proto/relay"
)

// Config is one run of probe.
type Config struct {
	Targets  []string       // HOST[:PORT]; IPv6 as [addr]:port or a bare address
	Protocol probe.Protocol // --qmqp/--qmtp/--smtp; probe.Unknown: by port
	Timeout  time.Duration
	Wait     time.Duration
	Source   string // local IP to connect from
	SendTo   string // --send recipient; "" probes harmlessly
	From     string // --from
	JSON     bool
	Color    bool
	// Dial overrides connections (tests); nil uses Source.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS: handshake first and report the certificate (--tls), verified
	// against TLSCA (a PEM file; "": the system roots).
	TLS   bool
	TLSCA string
	// Lookup resolves host names; nil means the system resolver.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Result is one address and port.
type Result struct {
	Target string `json:"target"`
	probe.PortResult
	Send *probe.SendResult `json:"send,omitempty"`
}

type job struct {
	target string
	addr   string // ip:port, or "" when the host did not resolve
	expect probe.Protocol
	err    error
}

// Run probes every target and writes the report to w. It returns the
// worst of the results' verdicts (ok: all as expected; unexpected:
// something else answered; down: something closed or unreachable), or
// an error for a bad invocation.
func Run(ctx context.Context, cfg Config, w io.Writer) (probe.Verdict, error) {
	if len(cfg.Targets) == 0 {
		return probe.OK, fmt.Errorf("no HOST given")
	}
	jobs, err := plan(ctx, cfg)
	if err != nil {
		return probe.OK, err
	}
	p := &probe.Prober{Dial: cfg.Dial, Source: cfg.Source, ConnectTimeout: cfg.Timeout, Wait: cfg.Wait, TLS: cfg.TLS}
	if cfg.TLSCA != "" {
		if p.TLSRoots, err = relay.LoadCAFile(cfg.TLSCA); err != nil {
			return probe.OK, err
		}
	}
	if cfg.SendTo != "" {
		// SMTP's EHLO name, as qmail-remote chooses it.
		if p.Helo, err = control.Helo(os.Getenv); err != nil {
			return probe.OK, fmt.Errorf("the name to say EHLO with: %w", err)
		}
	}
	if cfg.Source != "" && net.ParseIP(cfg.Source) == nil {
		return probe.OK, fmt.Errorf("--source %q is not an IP address", cfg.Source)
	}
	results := make([]Result, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = run(ctx, p, cfg, j)
		}()
	}
	wg.Wait()

	worst := probe.OK
	for _, r := range results {
		worst = max(worst, r.Verdict)
	}
	if cfg.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return worst, enc.Encode(results)
	}
	return worst, writeTable(w, results, cfg)
}

func run(ctx context.Context, p *probe.Prober, cfg Config, j job) Result {
	r := Result{Target: j.target}
	r.Addr, r.Expect = j.addr, j.expect
	if j.err != nil {
		r.State, r.Verdict, r.Error, r.Note = probe.Unreachable, probe.Down, j.err.Error(), "cannot resolve"
		return r
	}
	if cfg.SendTo == "" {
		r.PortResult = p.Port(ctx, j.addr, j.expect)
		return r
	}
	s := p.Send(ctx, j.addr, j.expect, cfg.From, cfg.SendTo, cfg.Timeout)
	r.Send = &s
	r.State, r.ConnectMS, r.Verdict, r.Error, r.TLS = s.State, s.ConnectMS, s.Verdict, s.Error, s.TLS
	switch {
	case s.Reply != nil:
		r.Note = fmt.Sprintf("%s reply %s %q", strings.ToUpper(string(j.expect)), s.Reply.Status, s.Reply.Text)
	case s.TLS != nil && !s.TLS.Verified:
		r.Note = "TLS: " + s.TLS.String() + "; nothing sent"
	case s.State == probe.Open:
		r.Note = "no reply: " + s.Error
	default:
		r.Note = "cannot connect"
	}
	return r
}

// plan expands targets into address:port jobs.
func plan(ctx context.Context, cfg Config) ([]job, error) {
	if cfg.SendTo != "" && cfg.Protocol == probe.Unknown {
		for _, t := range cfg.Targets {
			if _, port := splitTarget(t); probe.ProtocolOfPort(port) == probe.Unknown {
				return nil, fmt.Errorf("--send needs one protocol: give --qmqp, --qmtp or --smtp, or a well-known port, for %s", t)
			}
		}
	}
	lookup := cfg.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	var jobs []job
	for _, t := range cfg.Targets {
		host, port := splitTarget(t)
		if host == "" {
			return nil, fmt.Errorf("%q: no host", t)
		}
		type pp struct {
			port   string
			expect probe.Protocol
		}
		var ports []pp
		switch {
		case port != "":
			expect := cfg.Protocol
			if expect == probe.Unknown {
				expect = probe.ProtocolOfPort(port)
			}
			ports = []pp{{port, expect}}
		case cfg.Protocol != probe.Unknown:
			ports = []pp{{probe.DefaultPort(cfg.Protocol), cfg.Protocol}}
		default:
			ports = []pp{{probe.DefaultPort(probe.QMQP), probe.QMQP}, {probe.DefaultPort(probe.QMTP), probe.QMTP}, {probe.DefaultPort(probe.SMTP), probe.SMTP}}
		}
		var addrs []netip.Addr
		var err error
		if a, perr := netip.ParseAddr(host); perr == nil {
			addrs = []netip.Addr{a}
		} else {
			lctx, cancel := context.WithTimeout(ctx, max(cfg.Timeout, 5*time.Second))
			addrs, err = lookup(lctx, host)
			cancel()
			if err == nil && len(addrs) == 0 {
				err = fmt.Errorf("%s has no address", host)
			}
		}
		if err != nil {
			for _, p := range ports {
				jobs = append(jobs, job{target: t, addr: net.JoinHostPort(host, p.port), expect: p.expect, err: err})
			}
			continue
		}
		for _, a := range addrs {
			for _, p := range ports {
				jobs = append(jobs, job{target: t, addr: net.JoinHostPort(a.Unmap().String(), p.port), expect: p.expect})
			}
		}
	}
	return jobs, nil
}

// splitTarget splits HOST[:PORT]; a bare IPv6 address has no port.
func splitTarget(t string) (host, port string) {
	if h, p, err := net.SplitHostPort(t); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(t, "["), "]"), ""
}

const (
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	red    = "\x1b[31m"
	reset  = "\x1b[0m"
)

// monitoring is what a probe's verdict means to a monitoring system;
// exitcode.Probe numbers it (the table said the rest).
var monitoring = map[probe.Verdict]exitcode.Verdict{
	probe.OK: exitcode.VerdictOK, probe.Unexpected: exitcode.VerdictWarning, probe.Down: exitcode.VerdictCritical}

func verdict(v probe.Verdict, color bool) string {
	if !color {
		return v.String()
	}
	return map[probe.Verdict]string{probe.OK: green, probe.Unexpected: yellow, probe.Down: red}[v] + v.String() + reset
}

func writeTable(w io.Writer, results []Result, cfg Config) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tEXPECT\tSTATE\tCONNECT\tVERDICT\tWHAT")
	for _, r := range results {
		expect := string(r.Expect)
		if expect == "" {
			expect = "-"
		}
		connect := "-"
		if r.State != probe.Unreachable || r.ConnectMS > 0 {
			connect = fmt.Sprintf("%.1fms", r.ConnectMS)
		}
		what := r.Note
		if r.Error != "" && r.Verdict == probe.Down {
			what += ": " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Addr, expect, r.State, connect, verdict(r.Verdict, cfg.Color), what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		s := r.Send
		if s == nil || s.State != probe.Open {
			continue
		}
		fmt.Fprintf(w, "\n%s %s: message %s, from <%s> to <%s>\n", s.Addr, strings.ToUpper(string(s.Protocol)), s.MessageID, cfg.From, cfg.SendTo)
		if s.TLS != nil {
			fmt.Fprintf(w, "  TLS: %s\n", s.TLS)
		}
		for _, l := range s.SMTP {
			fmt.Fprintf(w, "  %s\n", l)
		}
		if s.Reply != nil {
			fmt.Fprintf(w, "  reply: %s %s\n", s.Reply.Status, s.Reply.Text)
		} else {
			fmt.Fprintf(w, "  no reply: %s\n", s.Error)
		}
		fmt.Fprintf(w, "  times: connect %.1fms, data sent %.1fms, first reply byte %.1fms after the last byte, total %.1fms\n",
			s.ConnectMS, s.SendMS, s.ReplyMS, s.TotalMS)
	}
	return nil
}

// Command returns the probe command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "probe",
		Usage:     "show what listens on a host's QMQP (628), QMTP (209) and SMTP (25) ports",
		ArgsUsage: "HOST[:PORT]...",
		Description: `Without a port, probes 628, 209 and 25. For each address and port it reports
closed, filtered (no answer within --timeout) or open with the connect time,
and what the server said before being spoken to: an SMTP banner, an immediate
netstring (Postfix qmqpd's "D... not authorized" to a refused client), or
silence, which is what a QMQP or QMTP server says. Harmless: it sends no mail
and leaves before any data (an SMTP server gets QUIT).

--tls starts with a TLS handshake (QMQPS on 6628, QMTPS on 6209, SMTPS on
465) and reports the version, cipher and certificate (subject, issuer, names,
expiry) and whether it verifies for the host against the system roots (--tls-ca
FILE for a private CA); a port that does not speak TLS, or whose certificate
does not verify, is "unexpected" (exit 1). With --send the message goes inside
that TLS, and only when the certificate verifies.

--send RCPT submits one small test message over the chosen protocol and
reports the K/Z/D reply (SMTP: the dialogue) with its timings.

Exit status: 0 every port speaks what was expected (for QMQP and QMTP, open
and silent; with --send, a K), 1 something else answered (an SMTP banner on
628, a refusal, a Z or D), 2 closed, filtered or unreachable.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "qmqp", Usage: "expect QMQP (port 628 when none is given)"},
			&cli.BoolFlag{Name: "qmtp", Usage: "expect QMTP (port 209 when none is given)"},
			&cli.BoolFlag{Name: "smtp", Usage: "expect SMTP (port 25 when none is given)"},
			&cli.BoolFlag{Name: "json", Usage: "write the results as JSON"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "bound on each connect, each write of --send and the whole wait for each reply"},
			&cli.DurationFlag{Name: "wait", Value: 2 * time.Second, Usage: "how long to listen for a greeting before calling a port silent"},
			&cli.StringFlag{Name: "source", Usage: "connect from this local `IP` address"},
			&cli.StringFlag{Name: "send", Usage: "submit one test message to `RCPT` and report the reply"},
			&cli.StringFlag{Name: "from", Usage: "envelope sender `ADDR` for --send (default: qbox-probe@HOSTNAME; '' is the null sender)"},
			&cli.BoolFlag{Name: "tls", Usage: "start with a TLS handshake (QMQPS, QMTPS, SMTPS) and report the version and the certificate, verified for the host"},
			&cli.StringFlag{Name: "tls-ca", Usage: "with --tls: verify against the PEM CA `FILE` instead of the system roots"},
		},
		Action: func(c *cli.Context) error {
			cfg := Config{
				Targets: c.Args().Slice(),
				Timeout: c.Duration("timeout"),
				Wait:    c.Duration("wait"),
				Source:  c.String("source"),
				SendTo:  c.String("send"),
				JSON:    c.Bool("json"),
				TLS:     c.Bool("tls"),
				TLSCA:   c.String("tls-ca"),
			}
			for _, a := range cfg.Targets {
				if strings.HasPrefix(a, "-") {
					return exitcode.Usage("%s: options go before the first HOST", a)
				}
			}
			n := 0
			for _, p := range []probe.Protocol{probe.QMQP, probe.QMTP, probe.SMTP} {
				if c.Bool(string(p)) {
					cfg.Protocol = p
					n++
				}
			}
			if n > 1 {
				return exitcode.Usage("give at most one of --qmqp, --qmtp and --smtp")
			}
			if c.IsSet("from") {
				cfg.From = c.String("from")
				if cfg.From == "<>" {
					cfg.From = ""
				}
			} else {
				host, _ := os.Hostname()
				cfg.From = "qbox-probe@" + host
			}
			if c.IsSet("from") && !c.IsSet("send") {
				return exitcode.Usage("--from needs --send")
			}
			if f, ok := c.App.Writer.(*os.File); ok && !cfg.JSON {
				cfg.Color = isatty.IsTerminal(f.Fd()) && os.Getenv("NO_COLOR") == ""
			}
			v, err := Run(c.Context, cfg, c.App.Writer)
			if err != nil {
				return exitcode.Under(exitcode.Probe, exitcode.Usage("%v", err))
			}
			return exitcode.Found(exitcode.Probe, monitoring[v])
		},
	}
}
