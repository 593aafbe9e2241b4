// Package inject is `qbox inject`, a QMQP client for scripts, and the
// qmail-qmqpc personality (mini-qmail's bin/qmail-queue).
package inject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/qmail/message"
	"qbox/proto/queue/spool"
	"qbox/proto/relay"
)

// Defaults as qmail-qmqpc has them.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultTimeout        = 60 * time.Second
)

// Command returns the inject command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "inject",
		Usage:     "send one message (stdin) to a QMQP server",
		ArgsUsage: "[RECIPIENT...] < message",
		Description: `Sends the message on stdin over QMQP (port 628) to the first server that takes the
connection, and exits with the answer. By default the message is prepared as
qmail-inject does: Date, Message-ID and From are added when missing (From from
$QMAILUSER/$USER at $QMAILHOST or control/defaulthost, name from $QMAILNAME or
$NAME), Bcc, Resent-Bcc, Return-Path and Content-Length are removed, CRLF becomes
LF and a final newline is added; a bare recipient ("root") gets the default host.
--raw sends the bytes untouched.

--flush ignores stdin and delivers what the sendmail personality queued while
every server was down (the same as sendmail -q, to these servers): files with
the same sender and content go as one message, each is removed only after K, a D
is bounced to the sender. Exit 0 when the spool is empty afterwards, 111 when mail
remains or another flush is running.

Servers (relays): the --server flags, else $QBOX_RELAYS, else
$QMAILHOME/control/relays, else $QMQPSERVERS (comma or space separated), else
$QMAILHOME/control/qmqpservers (one per line; QMAILHOME defaults to /var/qmail).
Each is a URL, qmqp://HOST[:628], qmqps://HOST[:6628], qmtp://HOST[:209],
qmtps://HOST[:6209], smtp://[USER@]HOST[:587] (STARTTLS required; ?tls=none for
plain text) or smtps://[USER@]HOST[:465], or a bare HOST, HOST:PORT or
[IPv6]:PORT, which is QMQP on port 628. TLS is 1.2 or newer, verified against the
system roots (--tls-ca or ?ca=FILE for a private CA). An SMTP relay's password
comes from the netrc file $QMAILHOME/control/netrc (mode 600, yours or root's).

Failover: servers are tried in order, and the next one only when the connection
to this one fails (refused, timed out, unreachable). Once the connection is up
and bytes were sent, any failure is final and no other server is tried: the
first server may already have queued the message, and a retry elsewhere could
deliver it twice. Retry later instead (exit 111).

Some recipients taken, not all: a QMTP or SMTP relay answers each recipient.
When it takes some and not the others (or defers them all), the recipients it
did not take are queued in the sendmail spool ($QBOX_SPOOL, the system queue or
~/.qbox/spool, as sendmail queues) and inject exits 0 with one line on stderr
saying how many were taken, which were queued, where and why: exit 111 would
make the caller send the whole message again, twice to those who have it.
sendmail -q or qbox inject --flush delivers the rest; a refusal (D) among
them then bounces to the sender. If the spool cannot take them, the exit is
111 and the message names the recipients that already have it. QMQP answers
for the whole message: its Z is exit 111, nothing queued.

Recipients: the arguments, plus with -t those in To, Cc and Bcc (Resent-To,
Resent-Cc and Resent-Bcc when the message has Resent- fields). A message with no
recipient at all is refused (qmail-inject would silently lose it). An address
holding CR, LF or NUL (an argument, --from, a header field), an empty recipient,
and a full name holding CR, LF or NUL that would go into an added From are
refused (exit 100), never rewritten or encoded.

Memory stays small for any size: a file on stdin is streamed from disk; a pipe is
held in memory up to 2 MiB, then spooled to a temporary file in $TMPDIR.

Exit status:
   0    the server accepted the message (K), or took it for some recipients
        and the rest are queued (see above)
   100  permanent: the server rejected it (D) for every recipient, no
        recipients, bad usage, bad address or header, no server configured
   111  temporary: the server deferred it (Z), no server reachable, the
        connection failed or timed out, the reply was missing or malformed,
        or recipients not taken could not be queued
The server's reply text is printed on stderr unless it is K.

   qbox inject -s mx1.example.com -s mx2.example.com -f me@example.com you@example.org < msg
   echo 'Subject: test' | QMQPSERVERS=10.0.0.1 qbox inject -t`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Aliases: []string{"f"}, Usage: "envelope sender `ADDR` (empty or <> = null sender; default: Return-Path, else $QMAILSUSER/$QMAILUSER/$USER)"},
			&cli.StringSliceFlag{Name: "server", Aliases: []string{"s"}, Usage: "relay `URL` or QMQP server HOST[:PORT] (repeatable, tried in order; IPv6 in brackets)"},
			&cli.StringFlag{Name: "tls-ca", Usage: "verify relays' TLS certificates against this PEM `FILE` instead of the system roots"},
			&cli.StringFlag{Name: "tls-client-cert", Usage: "client certificate `FILE` (PEM) to show TLS relays"},
			&cli.StringFlag{Name: "tls-client-key", Usage: "key `FILE` (PEM) of --tls-client-cert"},
			&cli.DurationFlag{Name: "connect-timeout", Value: DefaultConnectTimeout, Usage: "connect timeout per server"},
			// The name before flush-maildir's settled it, kept working.
			&cli.DurationFlag{Name: "timeout-connect", Value: DefaultConnectTimeout, Hidden: true},
			&cli.DurationFlag{Name: "timeout", Value: DefaultTimeout, Usage: "bound on each write once connected, and on the whole wait for the reply"},
			&cli.BoolFlag{Name: "t", Usage: "also send to the To, Cc and Bcc recipients of the header"},
			&cli.BoolFlag{Name: "raw", Usage: "send the message bytes untouched (no header completion, no CRLF conversion)"},
			&cli.BoolFlag{Name: "flush", Usage: "ignore stdin; deliver the sendmail spool ($QBOX_SPOOL, /var/spool/qbox or ~/.qbox/spool) to the servers"},
		},
		Action: action,
	}
}

// connectTimeout is --connect-timeout, or the hidden --timeout-connect
// when only that was given.
func connectTimeout(c *cli.Context) time.Duration {
	if c.IsSet("timeout-connect") && !c.IsSet("connect-timeout") {
		return c.Duration("timeout-connect")
	}
	return c.Duration("connect-timeout")
}

func action(c *cli.Context) error {
	servers, err := servers(c.StringSlice("server"), os.Getenv)
	if err != nil {
		// None anywhere, an unusable one, an unreadable control file.
		return exitcode.Configuration(err)
	}
	mcfg, err := message.ConfigFromEnv(os.Getenv)
	if err != nil {
		return exitcode.Temp(err)
	}
	if c.Bool("flush") {
		if c.Args().Len() > 0 {
			return exitcode.Usage("--flush takes no recipients")
		}
		dir, err := spool.Locate(os.Getenv)
		if err != nil {
			return exitcode.Temp(err)
		}
		log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
		return Flush(c.Context, FlushConfig{
			SpoolDir:       dir,
			Servers:        servers,
			ConnectTimeout: connectTimeout(c),
			Timeout:        c.Duration("timeout"),
			Hostname:       mcfg.DefaultHost,
			TLS:            tlsOptions(c),
		}, c.App.ErrWriter, log)
	}
	cfg := Config{
		Servers:          servers,
		Recipients:       c.Args().Slice(),
		HeaderRecipients: c.Bool("t"),
		Raw:              c.Bool("raw"),
		ConnectTimeout:   connectTimeout(c),
		Timeout:          c.Duration("timeout"),
		Message:          mcfg,
		TLS:              tlsOptions(c),
		Stderr:           c.App.ErrWriter,
	}
	if c.IsSet("from") {
		f := c.String("from")
		cfg.Sender = &f
	}
	if !cfg.Raw && message.IsSystemUser(os.Getuid()) {
		// The one rewriting setting for relays that insist: mail from a
		// system user goes out as $QBOX_SYSTEM_FROM / control/systemfrom.
		addr, err := message.SystemFrom(os.Getenv)
		if err != nil {
			return exitcode.Configuration(err)
		}
		if addr != "" {
			opts := message.Options{Sender: cfg.Sender}
			message.ApplySystemFrom(&cfg.Message, &opts, addr)
			cfg.Sender = opts.Sender
		}
	}
	stdin := c.App.Reader
	if stdin == nil {
		stdin = os.Stdin
	}
	_, err = Run(c.Context, cfg, stdin)
	return err
}

// Config is one injection.
type Config struct {
	Servers          []string
	Sender           *string // nil: from the message's Return-Path or the environment
	Recipients       []string
	HeaderRecipients bool // -t
	Raw              bool // send the bytes untouched
	ConnectTimeout   time.Duration
	Timeout          time.Duration
	Message          message.Config
	SpillThreshold   int64 // 0 means DefaultSpillThreshold
	TLS              relay.TLSOptions
	// Stderr gets the note when part of the message was queued; nil:
	// no note.
	Stderr io.Writer
}

// Run prepares the message read from in and sends it. It returns the
// folded reply; the error (nil when the message is delivered or safely
// queued) carries the exit status (exitcode.Code under exitcode.Qmail):
// 100 for a D to every recipient, bad input and no server configured,
// 111 for Z and network failures.
//
// A QMTP or SMTP relay answers each recipient: when it takes some and
// not all (or defers them all), the rest are queued in the sendmail spool
// (spool.Submit) and Run succeeds with a note on cfg.Stderr, because a
// retry of the whole message by the caller would deliver it twice to
// the recipients that have it. A QMQP answer is one for the message:
// Z is 111 as always.
func Run(ctx context.Context, cfg Config, in io.Reader) (proto.Reply, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	src, err := OpenSource(in, cfg.SpillThreshold)
	if err != nil {
		return proto.Reply{}, exitcode.Temp(err)
	}
	defer src.Close()
	env, open, size, err := Prepare(src, cfg)
	if err != nil {
		return proto.Reply{}, err
	}
	client, err := relayClient(cfg.Servers, cfg.ConnectTimeout, cfg.Timeout, cfg.TLS, os.Getenv)
	if err != nil {
		return proto.Reply{}, exitcode.Configuration(err)
	}
	o, err := client.SendEach(ctx, env, size, open)
	switch {
	case errors.Is(err, proto.ErrNoServers):
		return proto.Reply{}, ErrNoServers // the same fault, saying where to configure one
	case err != nil:
		return proto.Reply{}, exitcode.Temp(err) // no relay reached: nothing was sent
	}
	reply := o.Reply()
	split := o.Split(env.Recipients)
	switch {
	case split.Err == nil:
		return reply, nil
	case split.Refused:
		return reply, exitcode.Perm(split.Err)
	case !o.PerRecipient:
		return reply, exitcode.Temp(split.Err) // QMQP: one answer for the message
	}
	return reply, queueRest(cfg, env, reply, split, open, size)
}

// queueRest puts the message in the sendmail spool for the recipients a
// per-recipient relay did not take (split.Left), as sendmail does, and
// says so on cfg.Stderr. When the spool cannot take it, the temporary
// failure names the recipients that already have the message: the
// caller's retry would send it to them again.
func queueRest(cfg Config, env proto.Envelope, reply proto.Reply, split relay.Split, open func() (io.ReadCloser, error), size int64) error {
	rest := proto.Envelope{Sender: env.Sender, Recipients: split.Left}
	why := reply.Err()
	where, err := submitRest(rest, open, size, split.Err.Error())
	if err != nil {
		if len(split.Taken) == 0 {
			return exitcode.Temp(fmt.Errorf("%v; and it could not be queued: %v", why, err))
		}
		taken := strings.Join(split.Taken, ", ")
		return exitcode.Temp(fmt.Errorf("the relay took the message for %s but not for the rest (%v), and the rest could not be queued (%v): a retry of the whole message sends it again to %s",
			taken, why, err, taken))
	}
	if cfg.Stderr == nil {
		return nil
	}
	if len(split.Taken) == 0 {
		fmt.Fprintf(cfg.Stderr, "qbox inject: not sent now (%v); queued for its %d recipients in %s\n", why, len(rest.Recipients), where)
		return nil
	}
	fmt.Fprintf(cfg.Stderr, "qbox inject: taken for %d of %d recipients; the other %d (%s) not taken (%v) and queued in %s\n",
		len(split.Taken), len(env.Recipients), len(rest.Recipients), strings.Join(rest.Recipients, ", "), why, where)
	return nil
}

// submitRest copies the prepared message (the bytes the relay was sent)
// into a buffer spool.Submit can read at offsets, and queues it.
func submitRest(env proto.Envelope, open func() (io.ReadCloser, error), size int64, lastErr string) (spool.Where, error) {
	rc, err := open()
	if err != nil {
		return spool.Where{}, err
	}
	defer rc.Close()
	var buf spill.Buffer
	defer buf.Close()
	n, err := buf.ReadFrom(rc)
	if err != nil {
		return spool.Where{}, err
	}
	if n != size {
		return spool.Where{}, fmt.Errorf("the message changed size while queued (%d bytes, not %d)", n, size)
	}
	return spool.Submit(os.Getenv, env, &buf, n, lastErr)
}

// Prepare turns a re-readable message into the envelope, an opener of
// the exact bytes to send (each call reads them again from the start:
// SMTP reads them twice, a queued remainder once more) and their size,
// without holding the body in memory: in the default mode the header is
// completed and the body is read once more to count it after CRLF
// conversion. One reader at a time: they share src.
func Prepare(src *Source, cfg Config) (proto.Envelope, func() (io.ReadCloser, error), int64, error) {
	r, err := src.At(0)
	if err != nil {
		return proto.Envelope{}, nil, 0, exitcode.Temp(err)
	}
	m, err := message.Prepare(r, cfg.Message, message.Options{
		Sender:           cfg.Sender,
		Recipients:       cfg.Recipients,
		HeaderRecipients: cfg.HeaderRecipients,
	})
	if err != nil {
		var refused *message.RefusedError
		if errors.As(err, &refused) || errors.Is(err, message.ErrHeaderTooLarge) {
			return proto.Envelope{}, nil, 0, exitcode.Perm(err)
		}
		return proto.Envelope{}, nil, 0, exitcode.Temp(fmt.Errorf("reading the message: %w", err))
	}
	env := proto.Envelope{Sender: m.Sender, Recipients: m.Recipients}
	if len(env.Recipients) == 0 {
		hint := "give recipients as arguments"
		if !cfg.HeaderRecipients {
			hint += " or use -t to take them from To, Cc and Bcc"
		}
		return env, nil, 0, exitcode.Usage("no recipients: %s (a message for nobody would be lost)", hint)
	}
	if cfg.Raw {
		open := func() (io.ReadCloser, error) {
			r, err := src.At(0)
			if err != nil {
				return nil, err
			}
			return io.NopCloser(r), nil
		}
		return env, open, src.Size(), nil
	}
	r, err = src.At(m.BodyOffset)
	if err != nil {
		return env, nil, 0, exitcode.Temp(err)
	}
	n, err := io.Copy(io.Discard, message.NormalizeBody(r))
	if err != nil {
		return env, nil, 0, exitcode.Temp(fmt.Errorf("reading the message: %w", err))
	}
	open := func() (io.ReadCloser, error) {
		r, err := src.At(m.BodyOffset)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(io.MultiReader(bytes.NewReader(m.Header), message.NormalizeBody(r))), nil
	}
	return env, open, int64(len(m.Header)) + n, nil
}
