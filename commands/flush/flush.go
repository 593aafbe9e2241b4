// Package flush is `qbox flush-maildir` and the maildirqmtp personality:
// push the mail collected in a maildir to a QMTP server over one
// pipelined connection, removing each file only after the server's K.
package flush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/inject"
	"qbox/commands/interrupt"
	"qbox/proto/bounce"
	"qbox/proto/mxps"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
)

// Command returns the flush-maildir command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "flush-maildir",
		Usage:     "send the mail queued in a maildir to a QMTP server (maildirqmtp)",
		ArgsUsage: "DIR PREFIX HOST[:PORT]   (with --mxps: DIR PREFIX)",
		Description: `Sends every message in DIR's new/ and cur/ whose second line is
"Delivered-To: PREFIX..." to the QMTP server HOST (port 209 unless given), with
the prefix stripped from the recipient, the sender taken from the first line
"Return-Path: <...>". This is serialmail's maildirqmtp, with the same arguments:

   qbox flush-maildir ~alias/pppdir alias-ppp- 192.0.2.1

One connection carries all messages, pipelined, so a slow link stays full.
A file is removed only after the server's K. Z keeps it for the next run,
unless it is older than --lifetime: then, like D, it is bounced to its sender
over QMQP (--bounce-server, else $QMQPSERVERS or control/qmqpservers) and
removed once the bounce is accepted. A server that cannot be reached never
causes a removal or a bounce. One flush per maildir runs at a time.

On SIGINT, SIGTERM or SIGHUP no further message is started; the replies
already owed are read (within --read-timeout), what got K is removed, the
summary is printed and the exit status is 111. A second signal stops at once.

Exit status: 0 nothing left, 111 messages remain, the server could not be
reached or the run was interrupted, 100 usage or configuration error.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "lifetime", Value: DefaultLifetime, Usage: "bounce a deferred message older than `D` (serialmail: 1209600s)"},
			&cli.BoolFlag{Name: "no-bounce", Usage: "keep permanently failed messages instead of bouncing them"},
			&cli.StringSliceFlag{Name: "bounce-server", Usage: "QMQP `HOST[:PORT]` for bounces (repeatable; default $QMQPSERVERS or control/qmqpservers)"},
			&cli.BoolFlag{Name: "group", Usage: "send identical messages (same sender and content) as one package with all their recipients"},
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
			&cli.IntFlag{Name: "rounds", Value: DefaultRounds, Usage: "at most `N` sessions per run (a session that ended early is retried while it makes progress)"},
			&cli.DurationFlag{Name: "connect-timeout", Value: qmtp.ClientConnectTimeout, Usage: "connect timeout per address"},
			&cli.DurationFlag{Name: "write-timeout", Value: qmtp.ClientWriteTimeout, Usage: "give up when a write stalls this long"},
			&cli.DurationFlag{Name: "read-timeout", Value: qmtp.ClientReadTimeout, Usage: "deadline for each reply: complete within this of the later of the previous reply and the last write"},
			&cli.StringFlag{Name: "mxps", Usage: "deliver to `DOMAIN`'s QMTP exchangers (MXPS) instead of HOST"},
			&cli.StringFlag{Name: "resolver", Usage: "with --mxps: ask the DNS server `HOST:PORT` instead of the system resolver"},
			&cli.StringFlag{Name: "qmtp-port", Value: qmtp.DefaultPort, Usage: "with --mxps: the QMTP `PORT` of the exchangers"},
			&cli.StringFlag{Name: "hostname", Usage: "this host's `NAME` in bounces (default: the host name)"},
			&cli.StringFlag{Name: "postmaster", Usage: "double bounces go to `ADDR` (default postmaster@hostname)"},
		},
		Action: action,
	}
}

func action(c *cli.Context) error {
	args := c.Args().Slice()
	domain := c.String("mxps")
	want := 3
	if domain != "" {
		want = 2
	}
	if len(args) != want {
		if domain != "" {
			return exitcode.Usage("usage: qbox flush-maildir --mxps DOMAIN [flags] DIR PREFIX")
		}
		return exitcode.Usage("usage: qbox flush-maildir [flags] DIR PREFIX HOST[:PORT]")
	}
	cfg, err := baseConfig(args[0], args[1], c.StringSlice("bounce-server"), os.Getenv)
	if err != nil {
		return err
	}
	cfg.Lifetime = c.Duration("lifetime")
	cfg.NoBounce = c.Bool("no-bounce")
	cfg.Group = c.Bool("group")
	cfg.JSON = c.Bool("json")
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
	if domain != "" {
		connect, err := mxpsConnect(ctx, domain, c.String("resolver"), c.String("qmtp-port"), &cfg.Client)
		if err != nil {
			return err
		}
		cfg.Connect = connect
	} else {
		cfg.Connect = hostConnect(args[2], &cfg.Client)
	}
	_, err = Run(ctx, cfg)
	return exitError(args[0], err)
}

// baseConfig is what both the command and the personality start from.
func baseConfig(dir, prefix string, bounceFlags []string, getenv func(string) string) (Config, error) {
	if st, err := os.Stat(filepath.Join(dir, "new")); err != nil || !st.IsDir() {
		return Config{}, exitcode.Usage("%s is not a maildir (no new/ directory)", dir)
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

// exitError maps Run's result to the exit status.
func exitError(dir string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrLocked):
		return exitcode.Temp(fmt.Errorf("another flush of %s is running; not starting a second one", dir))
	case errors.Is(err, ErrRemaining):
		return exitcode.Temp(err)
	default:
		return exitcode.Temp(err)
	}
}

// hostConnect connects to HOST[:PORT], port 209 by default.
func hostConnect(host string, client *qmtp.Client) func(context.Context) (net.Conn, string, error) {
	addr := qmqp.WithDefaultPort(host, qmtp.DefaultPort)
	return func(ctx context.Context) (net.Conn, string, error) {
		return client.Connect(ctx, []string{addr})
	}
}

// mxpsConnect looks up domain's QMTP exchangers and returns a connect
// function walking them in MXPS order. Only a failed connect moves to the
// next exchanger; SMTP is never tried (flush speaks QMTP only), and once a
// session has started its messages stay with it.
func mxpsConnect(ctx context.Context, domain, resolver, port string, client *qmtp.Client) (func(context.Context) (net.Conn, string, error), error) {
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
	targets := mxps.QMTPTargets(rep)
	if len(targets) == 0 {
		if rep.HasQMTP() {
			return nil, exitcode.Temp(fmt.Errorf("--mxps %s: the QMTP exchangers have no address now", domain))
		}
		return nil, exitcode.Usage("--mxps %s: no QMTP exchanger (MX preference 12801+16k)", domain)
	}
	d := &mxps.Dialer{ConnectTimeout: client.ConnectTimeout, Ports: mxps.Ports{QMTP: port}, Dial: client.Dial}
	return func(ctx context.Context) (net.Conn, string, error) {
		conn, t, err := d.DialQMTP(ctx, targets)
		if err != nil {
			return nil, "", err
		}
		return conn, t.Host + " " + net.JoinHostPort(t.Addr.String(), port), nil
	}, nil
}

// bounceServers finds the QMQP servers for bounces as qbox inject does:
// the --bounce-server flags, else $QMQPSERVERS, else
// $QMAILHOME/control/qmqpservers. None is not an error here: permanent
// failures then stay in the maildir, reported, until one is configured.
func bounceServers(flags []string, getenv func(string) string) ([]string, error) {
	servers, err := inject.Servers(flags, getenv)
	if errors.Is(err, inject.ErrNoServers) {
		return nil, nil
	}
	return servers, err
}

// MaildirqmtpMain is serialmail's maildirqmtp: `maildirqmtp dir prefix
// host`, bouncing permanent failures and giving up on messages deferred
// for 14 days, exit 0/100/111.
func MaildirqmtpMain(args []string) int {
	sig := interrupt.Catch(context.Background(), os.Stderr, "maildirqmtp")
	defer sig.Release()
	return maildirqmtp(sig.Context, args, os.Stdout, os.Stderr, os.Getenv)
}

func maildirqmtp(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) != 4 {
		fmt.Fprintln(stderr, "maildirqmtp: usage: maildirqmtp dir prefix host")
		return exitcode.Permanent
	}
	cfg, err := baseConfig(args[1], args[2], nil, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "maildirqmtp: %v\n", err)
		return exitcode.Of(err)
	}
	cfg.Bounce.Program = "maildirqmtp"
	cfg.Out = stdout
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		cfg.Progress = f
	}
	cfg.Client = qmtp.Client{ConnectTimeout: 60 * time.Second}
	cfg.Connect = hostConnect(args[3], &cfg.Client)
	_, err = Run(ctx, cfg)
	if err = exitError(args[1], err); err != nil {
		fmt.Fprintf(stderr, "maildirqmtp: %v\n", err)
	}
	return exitcode.Of(err)
}
