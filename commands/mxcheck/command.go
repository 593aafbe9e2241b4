package mxcheck

import (
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto/mxps"
)

// Command returns the mx-check command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "mx-check",
		Usage:     "does a domain receive mail over QMTP? its MX records under MXPS",
		ArgsUsage: "DOMAIN...",
		Description: `Lists each domain's MX records in the order a sender tries them (by
preference, random among equal ones) with each preference's class under MXPS
(cr.yp.to/proto/mxps.txt): smtp (0-10000), mxps-smtp (12800+16k), qmtp
(12801+16k, k=0..15: QMTP on 209 first, SMTP on 25 if that connect fails) or
unassigned (10001-12799, 13056-65535, the other slices), and every
exchanger's A/AAAA addresses. A domain without MX records has the implicit
MX of RFC 5321 (its own addresses); "MX 0 ." is RFC 7505's null MX. Warns
about unassigned preferences and MX targets that are aliases (CNAME) or
address literals.

--probe connects to every address of each QMTP exchanger on 209 and 25:
MXPS requires both.

Exit status (the worst domain's): 0 a QMTP exchanger with an address (with
--probe: one answering on 209), 1 none, 100 the domain does not exist,
111 a temporary DNS failure (SERVFAIL, timeout).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "resolver", Usage: "ask the DNS server at `HOST[:PORT]` directly instead of the system resolver"},
			&cli.BoolFlag{Name: "probe", Usage: "check that every address of a QMTP exchanger answers on 209 and 25"},
			&cli.BoolFlag{Name: "json", Usage: "write the report as JSON"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "bound on each DNS query and each probe connect"},
			&cli.DurationFlag{Name: "wait", Value: 2 * time.Second, Usage: "with --probe, how long to listen for a greeting"},
			&cli.StringFlag{Name: "source", Usage: "with --probe, connect from this local `IP` address"},
			&cli.StringFlag{Name: "qmtp-port", Value: mxps.QMTPPort, Usage: "with --probe, the QMTP `PORT` (non-standard setups and tests)"},
			&cli.StringFlag{Name: "smtp-port", Value: mxps.SMTPPort, Usage: "with --probe, the SMTP `PORT` (non-standard setups and tests)"},
		},
		Action: func(c *cli.Context) error {
			cfg := Config{
				Domains: c.Args().Slice(),
				Probe:   c.Bool("probe"),
				JSON:    c.Bool("json"),
				Timeout: c.Duration("timeout"),
				Wait:    c.Duration("wait"),
				Source:  c.String("source"),
				Ports:   mxps.Ports{QMTP: c.String("qmtp-port"), SMTP: c.String("smtp-port")},
			}
			for _, a := range cfg.Domains {
				if strings.HasPrefix(a, "-") {
					return exitcode.Usage("%s: options go before the first DOMAIN", a)
				}
			}
			if r := c.String("resolver"); r != "" {
				cfg.Resolver = mxps.Server(WithDefaultPort(r), cfg.Timeout)
			}
			if f, ok := c.App.Writer.(*os.File); ok && !cfg.JSON {
				cfg.Color = isatty.IsTerminal(f.Fd()) && os.Getenv("NO_COLOR") == ""
			}
			worst, err := Run(c.Context, cfg, c.App.Writer)
			if err != nil {
				return exitcode.Under(exitcode.MXCheck, exitcode.Usage("%v", err))
			}
			// The report said why.
			return exitcode.Found(exitcode.MXCheck, worst.Verdict())
		},
	}
}
