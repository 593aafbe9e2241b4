package serve

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto"
	"qbox/proto/server"
	"qbox/proto/store/maildir"
	"qbox/proto/store/qmailqueue"
)

// Command returns the serve command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "QMQP, QMTP (and SMTP) server storing into a maildir or handing off to qmail-queue",
		ArgsUsage: "[-- QUEUE-PROGRAM-ARGS...]",
		Description: `Accepts mail over QMQP (port 628) and QMTP (port 209) and either stores it
durably in a maildir (one file per recipient, in the layout qmail-local writes
and flush-maildir or serialmail's maildirqmtp read) or hands every message to a
qmail-queue compatible program. K is answered only once the message is on disk
(file and directory fsync'd) or the program exited 0.

   qbox serve --maildir /var/spool/qbox
   qbox serve --queue-program /var/qmail/bin/qmail-queue --qmqp 10.0.0.1:628 --allow 10.0.0.0/24
   qbox serve --queue-program /usr/local/bin/qmail-qmqpc   # QMQP relay to a cluster
   qbox serve --queue-program /usr/local/bin/filter -- --mode strict   # program arguments after --

Only loopback clients are served unless --allow lists networks (the list then
replaces the loopback default); listening on another address without --allow is
refused. --allow-qmtp gives QMTP a list of its own: a QMTP MX is open to the
world, QMQP never should be. QMQP clients are trusted with any recipient; QMTP
recipients can be limited to the domains in --rcpthosts (qmail's
control/rcpthosts) except for --relay clients (or $RELAYCLIENT under --stdio):

   qbox serve --queue-program /var/qmail/bin/qmail-queue --qmtp 0.0.0.0:209 \
     --allow-qmtp 0.0.0.0/0 --allow-qmtp ::/0 --rcpthosts /var/qmail/control/rcpthosts

--smtp ADDR (default off) adds SMTP into the same store or program, for the
host's MX: MXPS wants every QMTP exchanger to speak SMTP on port 25 beside
QMTP on 209. It takes QMTP's access list (--allow-qmtp, else --allow),
--rcpthosts, --relay and limits; --max-size counts the message as SIZE does,
with CRLF line ends. EHLO offers PIPELINING, 8BITMIME, SIZE,
ENHANCEDSTATUSCODES, and STARTTLS given --smtp-cert and --smtp-key. Each RCPT
gets its own reply (553 outside --rcpthosts or for a bad address, 452 beyond
--max-recipients); the reply to the final dot comes only once the message is
stored: 250 when every recipient got K, 451 when any got Z (the client sends
again), 554 otherwise (naming how many did get it). Only CRLF "." CRLF ends the
data; a "." line next to a bare LF is text (Postfix's
smtpd_forbid_bare_newline = normalize), so no second message can be smuggled in.
A line over 64 KiB ends the session. A client outside the list is greeted 554.

   qbox serve --maildir /var/spool/mx --qmtp 0.0.0.0:209 --smtp 0.0.0.0:25 \
     --allow-qmtp 0.0.0.0/0 --allow-qmtp ::/0 --rcpthosts /etc/qbox/rcpthosts \
     --smtp-cert /etc/qbox/cert.pem --smtp-key /etc/qbox/key.pem

--qmqps ADDR and --qmtps ADDR (default off) add QMQP and QMTP inside TLS from
the first byte (QMTPS is s/qmail's, port 6209; QMQPS qbox's, port 6628) with the
certificate of --tls-cert and --tls-key (TLS 1.2 or newer). They take the same
access lists, --rcpthosts and limits as QMQP and QMTP. With --tls-client-ca,
clients are asked for a certificate; a QMTPS client whose certificate that CA
verifies may relay past --rcpthosts, as with s/qmail:

   qbox serve --maildir /var/spool/hub --qmqps 0.0.0.0:6628 --allow 192.0.2.0/24 \
     --tls-cert /etc/qbox/hub.pem --tls-key /etc/qbox/hub.key

At most --max-conns sessions (QMQP, QMTP and SMTP together) run at once. A
connection beyond them waits, in the order it came, up to 10 s (--timeout if
shorter) for the next free one in a waiting room of --max-waiting places (5 x
--max-conns by default), so a burst of clients is served a little later; one
that finds the room full, or waits longer, is refused at once (SMTP: 421 4.3.2),
a temporary failure. Connections held are bounded by these numbers, never by how
many clients come: at most 2 x --max-conns + --max-waiting + 1 descriptors (with
refusals of clients outside --allow), plus the running sessions' store files.

--metrics ADDR (default off) serves Prometheus metrics at http://ADDR/metrics:
sessions by protocol, refused connections, messages and recipients by reply
(K, Z, D), bytes received, the store's latency (a histogram), and the Go
runtime's and process's. Like the mail ports it serves loopback clients only
unless --allow lists others (403 for the rest); a non-loopback ADDR without
--allow is refused. Its address is logged in a "listening" line.

   qbox serve --maildir /var/spool/qbox --metrics 127.0.0.1:9628

Under systemd socket activation the passed sockets (FileDescriptorName
qmqp, qmtp or smtp) replace --qmqp, --qmtp and --smtp. Under tcpserver or inetd
use --stdio.
SIGTERM or SIGINT stops accepting, closes QMTP sessions that wait between
packages and SMTP sessions that wait outside a mail transaction, and lets
running sessions finish within --grace.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "maildir", Usage: "store mail in the maildir `DIR` (created if missing)"},
			&cli.BoolFlag{Name: "syncfs", Value: true, Usage: "--maildir: make the files of messages committed together durable with one syncfs(2) where the kernel and file system allow it; --syncfs=false fsyncs each message's files (for a maildir on a file system other programs keep busy: syncfs waits for their writes too)"},
			&cli.StringFlag{Name: "queue-program", Usage: "hand each message to the qmail-queue compatible program `PATH` (arguments after --)"},
			&cli.StringFlag{Name: "qmqp", Value: "127.0.0.1:628", Usage: "QMQP listen `ADDR`; empty disables"},
			&cli.StringFlag{Name: "qmtp", Value: "127.0.0.1:209", Usage: "QMTP listen `ADDR`; empty disables"},
			&cli.StringFlag{Name: "smtp", Usage: "SMTP listen `ADDR` (MXPS wants port 25 beside QMTP's 209), with QMTP's access list, --rcpthosts and --relay; default off"},
			&cli.StringFlag{Name: "qmqps", Usage: "QMQPS (QMQP inside TLS from the first byte; port 6628) listen `ADDR`, with --tls-cert/--tls-key; default off"},
			&cli.StringFlag{Name: "qmtps", Usage: "QMTPS (QMTP inside TLS from the first byte, s/qmail's; port 6209) listen `ADDR`, with --tls-cert/--tls-key; default off"},
			// One certificate for every TLS port; --smtp-cert/--smtp-key are
			// the names STARTTLS's pair had before QMQPS and QMTPS came.
			&cli.StringFlag{Name: "tls-cert", Aliases: []string{"smtp-cert"}, Usage: "the PEM certificate (chain) `FILE` of --qmqps and --qmtps, and of --smtp's STARTTLS (offered when given)"},
			&cli.StringFlag{Name: "tls-key", Aliases: []string{"smtp-key"}, Usage: "the PEM private key `FILE` of --tls-cert"},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "ask QMQPS/QMTPS clients for a certificate and verify it against the PEM CA `FILE`: a QMTPS client with one may relay past --rcpthosts"},
			&cli.StringFlag{Name: "stdio", Usage: "serve one connection on stdin/stdout in `PROTO` (qmqp, qmtp or smtp), under tcpserver or inetd"},
			&cli.StringSliceFlag{Name: "allow", Usage: "serve clients from `CIDR` (repeatable; replaces the loopback-only default)"},
			&cli.StringSliceFlag{Name: "allow-qmtp", Usage: "serve QMTP clients from `CIDR` instead of the --allow list (repeatable; 0.0.0.0/0 and ::/0 for everyone)"},
			&cli.StringFlag{Name: "rcpthosts", Usage: "QMTP clients may send only to the domains in `FILE` (qmail's control/rcpthosts) unless they may relay"},
			&cli.StringSliceFlag{Name: "relay", Usage: "with --rcpthosts: QMTP clients from `CIDR` may send to any domain (repeatable; under --stdio, $RELAYCLIENT does the same)"},
			&cli.StringFlag{Name: "max-size", Value: "10M", Usage: "largest message, in `BYTES` (suffix K, M or G for KiB, MiB, GiB)"},
			&cli.IntFlag{Name: "max-recipients", Value: server.DefaultMaxRecipients, Usage: "most recipients per message"},
			&cli.IntFlag{Name: "max-conns", Value: server.DefaultMaxConns, Usage: "most concurrent sessions (QMQP, QMTP and SMTP together); more connections wait in order for a free one, up to 10 s (--timeout if shorter), in the waiting room of --max-waiting"},
			&cli.IntFlag{Name: "max-waiting", DefaultText: "5 x --max-conns", Usage: "`N` connections beyond --max-conns may wait for a free session; more are refused at once (SMTP: 421 4.3.2); 0 for none"},
			&cli.StringFlag{Name: "envelope-memory", Value: "32M", Usage: "`BYTES` of envelope addresses all sessions may hold at once (each address counts 128 bytes more); recipients beyond it get Z and come again later, so memory stays bounded however many sessions send large envelopes"},
			&cli.DurationFlag{Name: "timeout", Value: server.DefaultTimeout, Usage: "idle timeout per read and write"},
			&cli.DurationFlag{Name: "session-limit", Value: server.DefaultSessionLimit, Usage: "longest session"},
			&cli.DurationFlag{Name: "grace", Value: DefaultGrace, Usage: "how long running sessions may finish after SIGTERM"},
			&cli.DurationFlag{Name: "queue-timeout", Value: qmailqueue.DefaultProgramTimeout, Usage: "bound on the hand-off to the queue program: each stalled write while the message arrives, then the rest of the message, the envelope and its exit together; its exit status decides (children it leaves running do not count)"},
			&cli.StringFlag{Name: "hostname", Usage: "this server's `NAME` in Received lines (default: TCPLOCALHOST, then the host name)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://`ADDR`/metrics (e.g. 127.0.0.1:9628); loopback clients only unless --allow lists others; default off"},
		},
		Action: action,
	}
}

func action(c *cli.Context) error {
	stderr := c.App.ErrWriter
	if stderr == nil {
		stderr = os.Stderr
	}
	logOut := newLogWriter(stderr) // lines logged at the same time go out in one write
	defer logOut.Flush()
	logger := slog.New(slog.NewTextHandler(logOut, nil))
	var metrics *Metrics
	if c.String("metrics") != "" {
		if c.String("stdio") != "" {
			return exitcode.Usage("--metrics serves a listening server; under --stdio (one connection) there is nothing to scrape")
		}
		metrics = NewMetrics()
		logger = slog.New(metrics.Tap(logger.Handler()))
	}
	backend, err := backendFromFlags(c, logger)
	if err != nil {
		return err
	}
	if metrics != nil {
		backend = metrics.Instrument(backend)
	}
	maxSize, err := ParseSize(c.String("max-size"))
	if err != nil {
		return exitcode.Usage("--max-size: %v", err)
	}
	envelopeMemory, err := ParseSize(c.String("envelope-memory"))
	if err != nil {
		return exitcode.Usage("--envelope-memory: %v", err)
	}
	setMemoryLimit(envelopeMemory)
	if c.Int("max-conns") <= 0 {
		return exitcode.Usage("--max-conns: %d is not a positive number of sessions", c.Int("max-conns"))
	}
	maxWaiting := 0 // the default, DefaultWaitingFactor x --max-conns
	if c.IsSet("max-waiting") {
		if maxWaiting = c.Int("max-waiting"); maxWaiting < 0 {
			return exitcode.Usage("--max-waiting: %d is negative; 0 means no waiting room", maxWaiting)
		}
		if maxWaiting == 0 {
			maxWaiting = -1 // Config's "none"
		}
	}
	allow, err := ParseAllow(c.StringSlice("allow"))
	if err != nil {
		return exitcode.Usage("--allow: %v", err)
	}
	var allowQMTP []netip.Prefix
	if c.IsSet("allow-qmtp") {
		if allowQMTP, err = ParseAllow(c.StringSlice("allow-qmtp")); err != nil {
			return exitcode.Usage("--allow-qmtp: %v", err)
		}
	}
	relay, err := ParseAllow(c.StringSlice("relay"))
	if err != nil {
		return exitcode.Usage("--relay: %v", err)
	}
	var rcptHosts *RcptHosts
	if f := c.String("rcpthosts"); f != "" {
		if rcptHosts, err = LoadRcptHosts(f); err != nil {
			return exitcode.Usage("--rcpthosts: %v", err)
		}
	} else if len(relay) > 0 {
		return exitcode.Usage("--relay only means something with --rcpthosts")
	}
	_, relayAll := os.LookupEnv("RELAYCLIENT")
	serverTLS, err := LoadServerTLS(c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca"))
	if err != nil {
		return exitcode.Usage("--tls-cert/--tls-key/--tls-client-ca: %v", err)
	}
	var smtpTLS *tls.Config // STARTTLS: the same certificate, no client's asked for
	if serverTLS != nil {
		smtpTLS = serverTLS.Clone()
		smtpTLS.ClientCAs, smtpTLS.ClientAuth = nil, tls.NoClientCert
	}
	cfg := Config{
		Backend:        backend,
		Hostname:       c.String("hostname"),
		Allow:          allow,
		AllowQMTP:      allowQMTP,
		RcptHosts:      rcptHosts,
		Relay:          relay,
		RelayAll:       relayAll && c.String("stdio") != "",
		MaxSize:        maxSize,
		MaxRecipients:  c.Int("max-recipients"),
		EnvelopeMemory: envelopeMemory,
		MaxConns:       c.Int("max-conns"),
		MaxWaiting:     maxWaiting,
		Timeout:        c.Duration("timeout"),
		SessionLimit:   c.Duration("session-limit"),
		Grace:          c.Duration("grace"),
		Logger:         logger,
		SMTPTLS:        smtpTLS,
	}
	if _, ok := backend.(*qmailqueue.Program); ok {
		// Each delivery in flight is a running program with its pipes
		// and buffer: one per QMTP session, as qmail-qmtpd runs them,
		// keeps --max-conns the bound on both.
		cfg.QMTPParallel = 1
	}
	if rcptHosts == nil && openToAll(cfg.AllowFor(QMTP)) {
		logger.Warn("QMTP (and SMTP) is open to every address and no --rcpthosts limits its recipients: anyone can relay through this server")
	}
	srv, err := NewServer(cfg)
	if err != nil {
		return exitcode.Usage("%v", err)
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if p := c.String("stdio"); p != "" {
		return exitcode.Temp(srv.ServeStdio(ctx, strings.ToLower(p), os.Stdin, os.Stdout, os.Getenv))
	}
	ls, err := ActivationListeners(os.Getenv, os.Unsetenv)
	if err != nil {
		return exitcode.Temp(err)
	}
	if ls == nil {
		if ls, err = Listen(c.String("qmqp"), c.String("qmtp"), c.String("smtp")); err != nil {
			return exitcode.Temp(err)
		}
		tlsLs, err := ListenTLS(c.String("qmqps"), c.String("qmtps"), serverTLS)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return exitcode.Usage("%v", err)
		}
		ls = append(ls, tlsLs...)
	} else if c.IsSet("qmqp") || c.IsSet("qmtp") || c.IsSet("smtp") {
		logger.Warn("socket activation: using the sockets systemd passed, not --qmqp/--qmtp/--smtp")
	}
	if err := CheckListeners(cfg, ls); err != nil {
		for _, l := range ls {
			l.Close()
		}
		return exitcode.Usage("%v", err)
	}
	if metrics != nil {
		ml, err := ListenMetrics(c.String("metrics"), cfg.Allow)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		logger.Info("listening", "proto", "metrics", "addr", ml.Addr().String())
		go func() {
			if err := metrics.ServeMetrics(ctx, ml, cfg.Allow); err != nil {
				logger.Error("metrics server failed", "addr", ml.Addr().String(), "err", err.Error())
			}
		}()
	}
	return exitcode.Temp(srv.Serve(ctx, ls))
}

func backendFromFlags(c *cli.Context, logger *slog.Logger) (proto.Backend, error) {
	dir, prog := c.String("maildir"), c.String("queue-program")
	args := c.Args().Slice()
	switch {
	case dir != "" && prog != "":
		return nil, exitcode.Usage("give --maildir or --queue-program, not both")
	case dir == "" && prog == "":
		return nil, exitcode.Usage("no store: give --maildir DIR or --queue-program PATH")
	case prog == "" && len(args) > 0:
		return nil, exitcode.Usage("unexpected arguments %q (arguments after -- are for --queue-program)", args)
	case dir != "":
		st, err := maildir.NewStore(dir)
		if err != nil {
			return nil, exitcode.Temp(err)
		}
		st.Logger = logger
		st.PerFile = !c.Bool("syncfs")
		return st, nil
	}
	if _, err := os.Stat(prog); err != nil {
		return nil, exitcode.Usage("--queue-program: %v", err)
	}
	return &qmailqueue.Program{Path: prog, Args: args, Timeout: c.Duration("queue-timeout"), Logger: logger}, nil
}

// ParseSize reads a byte count with an optional K, M or G suffix (powers
// of 1024; "KiB", "MB" and the like are read the same way).
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	upper := strings.ToUpper(num)
	for _, unit := range []struct {
		letter string
		mult   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if i := strings.Index(upper, unit.letter); i > 0 {
			if rest := upper[i:]; rest == unit.letter || rest == unit.letter+"B" || rest == unit.letter+"IB" {
				num, mult = num[:i], unit.mult
				break
			}
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is not a size in bytes", s)
	}
	return n * mult, nil
}

// openToAll reports whether the list admits every IPv4 or every IPv6
// address.
func openToAll(list []netip.Prefix) bool {
	for _, p := range list {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}

// ParseAllow reads CIDRs; a bare address means just that host.
func ParseAllow(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out, nil
}

// setMemoryLimit gives the Go runtime a soft memory limit of the
// envelope budget plus 64 MiB (buffers and the rest; the default: 96 MiB),
// unless $GOMEMLIMIT sets one: without it the collector lets garbage grow
// to the size of the live heap again, twice the budget's worth, before it
// collects. Memory beyond the limit makes the collector work harder, it
// never fails a session.
func setMemoryLimit(envelopeMemory int64) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	debug.SetMemoryLimit(envelopeMemory + 64<<20)
}
