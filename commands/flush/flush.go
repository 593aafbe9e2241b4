// Package flush is `qbox flush-maildir` and the maildirqmtp and
// maildirsmtp personalities: push the mail collected in a maildir to a
// QMTP or SMTP server (or a domain's exchangers, by MXPS) over one
// pipelined connection, removing each file only after the server's K. The
// work is proto/queue's; this package parses arguments and renders the
// outcomes.
package flush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/interrupt"
	"qbox/proto"
	"qbox/proto/mxps"
	"qbox/proto/qmail/control"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/queue/bounce"
	"qbox/proto/relay"
	"qbox/proto/smtp"
)

// Command returns the flush-maildir command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "flush-maildir",
		Usage:     "send the mail queued in a maildir to a QMTP or SMTP server (maildirqmtp, maildirsmtp)",
		ArgsUsage: "DIR PREFIX HOST[:PORT]   (with --smtp or --mxps: DIR PREFIX)",
		Description: `Sends every message in DIR's new/ and cur/ whose second line is
"Delivered-To: PREFIX..." to the QMTP server HOST (port 209 unless given), with
the prefix stripped from the recipient, the sender taken from the first line
"Return-Path: <...>". This is serialmail's maildirqmtp, with the same arguments.
HOST may be a URL: qmtps://HOST[:PORT] (or --tls require) is QMTPS, QMTP inside
TLS from the first byte (s/qmail's, port 6209), the certificate verified against
the system roots (--tls-ca FILE, or ?ca=FILE on the URL, for a private CA):

   qbox flush-maildir ~alias/pppdir alias-ppp- 192.0.2.1

With --smtp HOST[:PORT] the messages go over SMTP instead (port 25 unless
given; serialmail's maildirsmtp): EHLO (HELO when refused) as --helo, PIPELINING
when offered, STARTTLS whenever offered (--tls require makes it mandatory and
verifies the certificate), one reply per recipient (4xx is Z, 5xx is D).

With --mxps DOMAIN the messages go to DOMAIN's exchangers under MXPS: in RFC 5321
order; a QMTP exchanger (preference 12801+16k) over QMTP on 209 first and, only
when that connection attempt fails, over SMTP on 25 at the same address; other
exchangers over SMTP. Once a session has started no other server or protocol is
tried in the run. Each line (and the JSON "protocol") says which protocol carried
the message.

One connection carries all messages, pipelined, so a slow link stays full.
A file is removed only after the server's K. Z keeps it for the next run,
unless it is older than --lifetime: then, like D, it is bounced to its sender
over QMQP (--bounce-server, else $QMQPSERVERS or control/qmqpservers) and
removed once the bounce is accepted. A server that cannot be reached never
causes a removal or a bounce. One flush per maildir runs at a time.

Output, for cron: one line per message and a summary; nothing at all when there
was nothing to send. With -q (--quiet) only what failed (deferred, failed,
bounced, malformed) and then the summary: a run where everything was delivered
prints nothing. --json always prints the whole run.

On SIGINT, SIGTERM or SIGHUP no further message is started; the replies
already owed are read (within --read-timeout), what got K is removed, the
summary is printed and the exit status is 111. A second signal stops at once.

Exit status: 0 nothing left, 111 messages remain, the server could not be
reached or the run was interrupted, 100 usage or configuration error.`,
		Flags: append([]cli.Flag{
			&cli.DurationFlag{Name: "lifetime", Value: queue.DefaultLifetime, Usage: "bounce a deferred message older than `D` (serialmail: 1209600s)"},
			&cli.BoolFlag{Name: "no-bounce", Usage: "keep permanently failed messages instead of bouncing them"},
			&cli.StringSliceFlag{Name: "bounce-server", Usage: "QMQP `HOST[:PORT]` for bounces (repeatable; default $QMQPSERVERS or control/qmqpservers)"},
			&cli.BoolFlag{Name: "group", Usage: "send identical messages (same sender and content) as one package with all their recipients"},
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only what failed, and the summary only then (for cron)"},
			&cli.IntFlag{Name: "rounds", Value: queue.DefaultRounds, Usage: "at most `N` sessions per run (a session that ended early is retried while it makes progress)"},
			&cli.DurationFlag{Name: "connect-timeout", Value: qmtp.ClientConnectTimeout, Usage: "connect timeout per address"},
			&cli.DurationFlag{Name: "write-timeout", Value: qmtp.ClientWriteTimeout, Usage: "give up when a write stalls this long"},
			&cli.DurationFlag{Name: "read-timeout", Value: qmtp.ClientReadTimeout, DefaultText: "10m; with --smtp 5m for each command's reply, RFC 5321's",
				Usage: "deadline for each reply: complete within this of the later of the previous reply and the last write (SMTP: each command's reply)"},
			&cli.StringFlag{Name: "smtp", Usage: "deliver over SMTP to `HOST[:PORT]` (port 25) instead of QMTP to HOST"},
			&cli.StringFlag{Name: "helo", Usage: "with SMTP: the `NAME` to say EHLO with (default control/helohost, control/me, then the host name)"},
			&cli.StringFlag{Name: "tls", Value: "opportunistic", Usage: "with SMTP: STARTTLS `MODE`: opportunistic (whenever offered), require (verify the certificate), none; with QMTP, require is QMTPS (TLS from the first byte, port 6209)"},
			&cli.StringFlag{Name: "mxps", Usage: "deliver to `DOMAIN`'s exchangers (MXPS: QMTP first, SMTP when that connect fails) instead of HOST"},
			&cli.StringFlag{Name: "resolver", Usage: "with --mxps: ask the DNS server `HOST:PORT` instead of the system resolver"},
			&cli.StringFlag{Name: "qmtp-port", Value: qmtp.DefaultPort, Usage: "with --mxps: the QMTP `PORT` of the exchangers"},
			&cli.StringFlag{Name: "smtp-port", Value: mxps.SMTPPort, Usage: "with --mxps: the SMTP `PORT` of the exchangers"},
			&cli.StringFlag{Name: "hostname", Usage: "this host's `NAME` in bounces (default: the host name)"},
			&cli.StringFlag{Name: "postmaster", Usage: "double bounces go to `ADDR` (default postmaster@hostname)"},
		}, tlsFlags()...),
		Action: action,
	}
}

func action(c *cli.Context) error {
	args := c.Args().Slice()
	domain, smtpHost := c.String("mxps"), c.String("smtp")
	switch {
	case domain != "" && smtpHost != "":
		return exitcode.Usage("give --mxps or --smtp, not both")
	case domain != "" && len(args) != 2:
		return exitcode.Usage("usage: qbox flush-maildir --mxps DOMAIN [flags] DIR PREFIX")
	case smtpHost != "" && len(args) != 2:
		return exitcode.Usage("usage: qbox flush-maildir --smtp HOST[:PORT] [flags] DIR PREFIX")
	case domain == "" && smtpHost == "" && len(args) != 3:
		return exitcode.Usage("usage: qbox flush-maildir [flags] DIR PREFIX HOST[:PORT]")
	}
	helo := c.String("helo")
	if helo == "" && (domain != "" || smtpHost != "") {
		// qmail-remote's EHLO name: control/helohost, control/me, then
		// the host name.
		var err error
		if helo, err = control.Helo(os.Getenv); err != nil {
			return exitcode.Temp(fmt.Errorf("the name to say EHLO with: %w", err))
		}
	}
	sc, err := smtpClient(helo, c.String("tls"), c.Duration("connect-timeout"))
	if err == nil && c.IsSet("read-timeout") {
		// SMTP's replies come one per command: the same deadline
		// bounds each (its default, 5 minutes, is RFC 5321's).
		sc.CommandTimeout = c.Duration("read-timeout")
	}
	if err != nil {
		return err
	}
	cfg, err := baseConfig(args[0], args[1], c.StringSlice("bounce-server"), os.Getenv)
	if err != nil {
		return err
	}
	cfg.Lifetime = c.Duration("lifetime")
	cfg.NoBounce = c.Bool("no-bounce")
	cfg.Group = c.Bool("group")
	cfg.JSON = c.Bool("json")
	cfg.Quiet = c.Bool("quiet")
	cfg.Rounds = c.Int("rounds")
	cfg.Client = qmtp.Client{
		ConnectTimeout: c.Duration("connect-timeout"),
		WriteTimeout:   c.Duration("write-timeout"),
		ReadTimeout:    c.Duration("read-timeout"),
	}
	if h := c.String("hostname"); h != "" {
		cfg.Bounce.Hostname = h
	}
	cfg.Bounce.Postmaster = c.String("postmaster")
	cfg.Out = c.App.Writer
	if f, ok := c.App.ErrWriter.(*os.File); ok && isatty.IsTerminal(f.Fd()) && !cfg.JSON {
		cfg.Progress = f
	}

	sig := interrupt.Catch(c.Context, c.App.ErrWriter, "qbox flush-maildir")
	defer sig.Release()
	ctx := sig.Context
	switch {
	case domain != "":
		t, err := mxpsTransport(ctx, domain, c.String("resolver"), mxps.Ports{QMTP: c.String("qmtp-port"), SMTP: c.String("smtp-port")}, cfg.Client, sc)
		if err != nil {
			return err
		}
		cfg.Transport = t
	case smtpHost != "":
		cfg.Transport = &queue.SMTP{Client: *sc, Addrs: []string{qmqp.WithDefaultPort(smtpHost, mxps.SMTPPort)}}
	default:
		addr, tlsCfg, err := qmtpTarget(args[2], c.String("tls") == "require", tlsOptionsOf(c))
		if err != nil {
			return err
		}
		cfg.Connect = hostConnectTLS(addr, &cfg.Client, tlsCfg)
	}
	_, err = Run(ctx, cfg)
	return exitError(args[0], err)
}

// checkMaildir says what keeps dir from being a maildir to flush, naming
// the real cause: it does not exist, it is no directory, it has no new/,
// or it cannot be read.
func checkMaildir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist", dir)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	st, err = os.Stat(filepath.Join(dir, "new"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s is not a maildir (it has no new/ directory)", dir)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a maildir (its new is not a directory)", dir)
	}
	return nil
}

// baseConfig is what both the command and the personality start from.
func baseConfig(dir, prefix string, bounceFlags []string, getenv func(string) string) (Config, error) {
	if err := checkMaildir(dir); err != nil {
		return Config{}, exitcode.Usage("%v", err)
	}
	servers, err := bounceServers(bounceFlags, getenv)
	if err != nil {
		return Config{}, exitcode.Usage("bounce servers: %v", err)
	}
	return Config{
		Dir:           dir,
		Prefix:        prefix,
		BounceServers: servers,
		Bounce:        bounce.Config{Program: "qbox flush-maildir"},
	}, nil
}

// exitError says what Run's error means: everything a run leaves is for
// a later run (temporary), a second run of the same maildir included.
func exitError(dir string, err error) error {
	if errors.Is(err, queue.ErrLocked) {
		return exitcode.Temp(fmt.Errorf("another flush of %s is running; not starting a second one", dir))
	}
	return exitcode.Temp(err)
}

// hostConnect connects to HOST[:PORT], port 209 by default.
func hostConnect(host string, client *qmtp.Client) func(context.Context) (net.Conn, string, error) {
	addr := qmqp.WithDefaultPort(host, qmtp.DefaultPort)
	return func(ctx context.Context) (net.Conn, string, error) {
		return client.Connect(ctx, []string{addr})
	}
}

// smtpClient is the SMTP client the flags describe.
func smtpClient(helo, tlsMode string, connectTimeout time.Duration) (*smtp.Client, error) {
	c := &smtp.Client{Helo: helo, ConnectTimeout: connectTimeout}
	switch tlsMode {
	case "", "opportunistic":
		c.TLS = smtp.TLSOpportunistic
	case "require":
		c.TLS = smtp.TLSRequire
	case "none":
		c.TLS = smtp.TLSNone
	default:
		return nil, exitcode.Usage("--tls %q: want opportunistic, require or none", tlsMode)
	}
	if helo != "" && strings.ContainsAny(helo, " \t\r\n\x00") {
		return nil, exitcode.Usage("--helo %q is not a host name", proto.Printable(helo, 100))
	}
	return c, nil
}

// mxpsTransport looks up domain's exchangers and returns a transport
// that walks them under MXPS's rule (queue.MXPS): QMTP first at a
// QMTP exchanger, SMTP only when that connect fails, SMTP at the others,
// and once a session has started its messages stay with it.
func mxpsTransport(ctx context.Context, domain, resolver string, ports mxps.Ports, qc qmtp.Client, sc *smtp.Client) (*queue.MXPS, error) {
	r := mxps.System()
	if resolver != "" {
		r = mxps.Server(resolver, 0)
	}
	rep, err := mxps.Lookup(ctx, r, domain)
	if err != nil {
		var de *mxps.DNSError
		if errors.As(err, &de) && !de.Temporary {
			return nil, exitcode.Usage("--mxps %s: %v", domain, err)
		}
		return nil, exitcode.Temp(fmt.Errorf("--mxps %s: %w", domain, err))
	}
	if rep.Null {
		return nil, exitcode.Usage("--mxps %s: the domain accepts no mail (null MX)", domain)
	}
	attempts := mxps.AllAttempts(rep, ports)
	if len(attempts) == 0 {
		return nil, exitcode.Temp(fmt.Errorf("--mxps %s: the exchangers have no address now", domain))
	}
	d := mxps.Dialer{ConnectTimeout: qc.ConnectTimeout, Ports: ports, Dial: qc.Dial}
	return &queue.MXPS{Attempts: attempts, Dialer: d, QMTP: qc, SMTP: sc}, nil
}

// bounceServers finds the QMQP servers for bounces as qbox inject does:
// the --bounce-server flags, else $QMQPSERVERS, else
// $QMAILHOME/control/qmqpservers. None is not an error here: permanent
// failures then stay in the maildir, reported, until one is configured.
func bounceServers(flags []string, getenv func(string) string) ([]string, error) {
	servers, err := control.QMQPServers(flags, getenv, control.FileStrict)
	if errors.Is(err, control.ErrNoServers) {
		return nil, nil
	}
	return servers, err
}

// The serialmail personalities' synopses: their man pages' SYNOPSIS,
// their usage lines and what `maildirqmtp --help` prints.
const (
	MaildirqmtpSynopsis = "maildirqmtp DIR PREFIX HOST[:PORT]"
	MaildirsmtpSynopsis = "maildirsmtp DIR PREFIX HOST[:PORT] HELOHOST"
)

// MaildirqmtpMain is serialmail's maildirqmtp: `maildirqmtp dir prefix
// host`, bouncing permanent failures and giving up on messages deferred
// for 14 days, exit 0/100/111 (exitcode.Qmail, applied by the caller).
func MaildirqmtpMain(args []string) error {
	sig := interrupt.Catch(context.Background(), os.Stderr, "maildirqmtp")
	defer sig.Release()
	return maildirqmtpRun(sig.Context, args, os.Stdout, os.Stderr, os.Getenv)
}

func maildirqmtpRun(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) != 4 {
		return exitcode.Usage("usage: %s", MaildirqmtpSynopsis)
	}
	cfg, err := baseConfig(args[1], args[2], nil, getenv)
	if err != nil {
		return err
	}
	cfg.Bounce.Program = "maildirqmtp"
	cfg.Out = stdout
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		cfg.Progress = f
	}
	cfg.Client = qmtp.Client{ConnectTimeout: 60 * time.Second}
	addr, tlsCfg, err := qmtpTarget(args[3], false, relay.TLSOptions{})
	if err != nil {
		return err
	}
	cfg.Connect = hostConnectTLS(addr, &cfg.Client, tlsCfg)
	_, err = Run(ctx, cfg)
	return exitError(args[1], err)
}

// MaildirsmtpMain is serialmail's maildirsmtp: `maildirsmtp dir prefix
// host helohost`, the same flush over SMTP to host's port 25 (HOST:PORT
// for another), saying EHLO (or HELO) as helohost; it bounces permanent
// failures, gives up on messages deferred for 14 days, and exits
// 0/100/111 (exitcode.Qmail, applied by the caller).
func MaildirsmtpMain(args []string) error {
	sig := interrupt.Catch(context.Background(), os.Stderr, "maildirsmtp")
	defer sig.Release()
	return maildirsmtpRun(sig.Context, args, os.Stdout, os.Stderr, os.Getenv)
}

func maildirsmtpRun(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) != 5 {
		return exitcode.Usage("usage: %s", MaildirsmtpSynopsis)
	}
	if args[4] == "" {
		return exitcode.Usage("the helohost argument is empty")
	}
	sc, err := smtpClient(args[4], "opportunistic", 60*time.Second)
	if err != nil {
		return err
	}
	cfg, err := baseConfig(args[1], args[2], nil, getenv)
	if err != nil {
		return err
	}
	cfg.Bounce.Program = "maildirsmtp"
	cfg.Out = stdout
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		cfg.Progress = f
	}
	cfg.Transport = &queue.SMTP{Client: *sc, Addrs: []string{qmqp.WithDefaultPort(args[3], mxps.SMTPPort)}}
	_, err = Run(ctx, cfg)
	return exitError(args[1], err)
}
