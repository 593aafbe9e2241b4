// Package sendmail is qbox as /usr/sbin/sendmail, qmail-inject and mailq:
// it completes a message's header as qmail-inject does, forwards it over
// QMQP, and when no server takes it right now writes it, fsync'd, into a
// local spool that `sendmail -q` delivers later. A relay outage never
// loses mail.
package sendmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"

	"qbox/commands/exitcode"
	"qbox/commands/interrupt"
	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/qmail/control"
	"qbox/proto/qmail/message"
	"qbox/proto/queue"
	"qbox/proto/queue/spool"
	"qbox/proto/relay"
)

// Process is what a personality receives from the process that runs it.
type Process struct {
	Prog   string // the name to prefix messages with
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	Now    func() time.Time
	// Interactive says a person reads Stderr (a terminal): notes that
	// are not failures are printed only then, or with -v, since cron
	// mails every line a job writes.
	Interactive bool
	// MailLog records an event in the mail log (syslog's mail facility,
	// as Postfix's sendmail logs); nil drops it.
	MailLog func(string)
}

func osProcess(args []string) *Process {
	prog := "sendmail"
	if len(args) > 0 {
		prog = filepath.Base(args[0])
		args = args[1:]
	}
	fd := os.Stderr.Fd()
	return &Process{Prog: prog, Args: args, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Now: time.Now,
		Interactive: isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd),
		MailLog:     func(msg string) { mailLog(prog, msg) }}
}

// mailLog sends msg to syslog's mail facility; without a syslog daemon
// it is dropped: the mail is safe, only the note is lost.
func mailLog(tag, msg string) {
	w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, tag)
	if err != nil {
		return
	}
	defer w.Close()
	w.Info(msg)
}

// note reports an event that needs nobody: always to the mail log, and
// on stderr when a person reads it or -v asked for it.
func (p *Process) note(verbose bool, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if p.MailLog != nil {
		p.MailLog(proto.Printable(msg, 2000))
	}
	if verbose || p.Interactive {
		p.errorf("%s", msg)
	}
}

func (p *Process) errorf(format string, a ...any) {
	fmt.Fprintf(p.Stderr, "%s: %s\n", p.Prog, fmt.Sprintf(format, a...))
}

func (p *Process) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

// The personalities' entry points return an error, which their caller
// prints after the program's name and maps to an exit status: sysexits
// for sendmail, mailq and newaliases, qmail's for qmail-inject.

// SendmailMain is qbox run as sendmail.
func SendmailMain(args []string) error { return Sendmail(context.Background(), osProcess(args)) }

// QmailInjectMain is qbox run as qmail-inject.
func QmailInjectMain(args []string) error { return QmailInject(context.Background(), osProcess(args)) }

// MailqMain is qbox run as mailq: it lists the spool.
func MailqMain(args []string) error { return Mailq(osProcess(args)) }

// NewaliasesMain is qbox run as newaliases: Debian's maintainer scripts
// and packages call it after touching /etc/aliases. qbox keeps no alias
// database (the QMQP hub does the aliasing), so it succeeds and says so.
func NewaliasesMain(args []string) error { return Newaliases(osProcess(args)) }

// Newaliases notes on stderr that there is nothing to rebuild; exit 0.
func Newaliases(p *Process) error {
	p.errorf("nothing to do: qbox keeps no alias database (aliases are the QMQP hub's)")
	return nil
}

// Sendmail runs the sendmail personality. Its error, for the caller to
// print after p.Prog, has the status exitcode.Sysexits gives it: 64
// usage, 65 a refused message or address, 69 rejected, 74 reading the
// message failed, 75 not sent and not spooled.
func Sendmail(ctx context.Context, p *Process) error {
	o := ParseOptions(p.Args)
	for _, w := range o.Warnings {
		p.errorf("warning: %s", w)
	}
	if o.UsageError != "" {
		return exitcode.Usage("%s", o.UsageError)
	}
	if o.Daemon && o.Mode != ModeFlush {
		return exitcode.Usage("-bd alone is not supported: qbox is no SMTP daemon (-bd -q30m runs the queue every 30 minutes)")
	}
	switch o.Mode {
	case ModeList:
		listSpool(p)
		return nil
	case ModeNoop:
		if o.Verbose {
			p.errorf("nothing to do: qbox keeps no alias database")
		}
		return nil
	case ModeFlush:
		if o.QueueInterval > 0 {
			runQueue(ctx, p, o)
			return nil
		}
		if o.Daemon {
			return exitcode.Usage("-bd alone is not supported: qbox is no SMTP daemon (-bd -q30m runs the queue every 30 minutes)")
		}
		sel, err := spool.ParseSelection(o.QueueSelect)
		if err != nil {
			return exitcode.Usage("%v", err)
		}
		// A failed pickup still lets the flush deliver what is queued,
		// then exits 75 with the one line that names it.
		perr := pickUp(p)
		ferr := flushSpool(ctx, p, o.Verbose, sel)
		if perr == nil {
			return ferr
		}
		if ferr != nil && !exitcode.Silent(ferr) {
			p.errorf("%v", ferr)
		}
		return exitcode.Temp(perr)
	case ModeSMTP:
		return serveSMTP(ctx, p)
	}

	cfg, err := message.ConfigFromEnv(p.Getenv)
	if err != nil {
		return exitcode.Temp(fmt.Errorf("reading the qmail configuration: %w", err))
	}
	if cfg.User == "anonymous" && noUserInEnv(p.Getenv) {
		// cron and systemd units set no USER or LOGNAME; sendmail and
		// Postfix then name the sender by the uid's login name.
		if name := loginName(); name != "" {
			cfg.User = name
		}
	}
	applySenderOptions(&cfg, o)
	rcpts, err := splitRecipients(o.Recipients)
	if err != nil {
		return exitcode.Usage("%v", err)
	}
	mopts := message.Options{Recipients: rcpts, HeaderRecipients: o.ReadHeader}
	if err := senderOptions(p, &cfg, &mopts, o.Sender, o.SenderSet); err != nil {
		return exitcode.Temp(err)
	}
	m, err := message.Prepare(p.Stdin, cfg, mopts)
	if err != nil {
		err = fmt.Errorf("%w; nothing sent", err)
		var refused *message.RefusedError
		switch {
		case errors.As(err, &refused) && refused.Caller:
			return exitcode.Usage("%w", err) // an argument or the environment
		case errors.As(err, &refused), errors.Is(err, message.ErrHeaderTooLarge):
			return exitcode.Data(err) // the message itself
		}
		return exitcode.Input(err)
	}
	if len(m.Recipients) == 0 {
		if o.ReadHeader {
			return exitcode.Data(errors.New("no recipients: none on the command line and no To, Cc or Bcc in the header; nothing sent"))
		}
		return exitcode.Usage("no recipients given (use -t to take them from the header); nothing sent")
	}
	res, err := submitMessage(ctx, p, o.MaxRecipients, m)
	if err != nil {
		return err
	}
	switch res.kind {
	case sent:
		if o.Verbose {
			p.errorf("sent to %s: %s", strings.Join(m.Recipients, ", "), proto.Printable(res.reply.Text, 2000))
		}
		drainInBackground(p)
		return nil
	case rejected:
		return exitcode.Perm(fmt.Errorf("message rejected permanently: %s", proto.Printable(res.reply.Text, 2000)))
	case queued:
		p.note(o.Verbose, "%s", res.queuedNote())
		return nil
	default:
		return exitcode.Temp(errors.New(res.reason))
	}
}

// noUserInEnv reports that none of the variables qmail-inject takes the
// sender's user name from is set.
func noUserInEnv(getenv func(string) string) bool {
	for _, v := range []string{"QMAILUSER", "MAILUSER", "USER", "LOGNAME"} {
		if getenv(v) != "" {
			return false
		}
	}
	return true
}

// loginName is the login name of this process's real uid from the
// password database, "" when it has none.
func loginName() string {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		return ""
	}
	return u.Username
}

// applySenderOptions gives -F and -f their effect on the From field that
// completion adds: -f names the user and host (as netqmail's sendmail
// does), -F the full name, kept even with -f (netqmail loses it).
func applySenderOptions(cfg *message.Config, o *Options) {
	if o.SenderSet && o.Sender != "" {
		if at := strings.LastIndexByte(o.Sender, '@'); at >= 0 {
			cfg.User, cfg.Host = o.Sender[:at], o.Sender[at+1:]
		} else {
			cfg.User, cfg.Host = o.Sender, ""
		}
		cfg.Name = "" // the environment's name belongs to someone else
	}
	if o.FullNameSet {
		cfg.Name = o.FullName
	}
}

// splitRecipients accepts sendmail's habit of several addresses in one
// argument ("a@x, b@y"). An argument without a comma goes to
// message.Prepare as it is, to be checked there with the rest of the
// envelope; one with a comma is checked whole before it is split, as
// Prepare does with a header field.
func splitRecipients(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		if !strings.ContainsAny(a, ",") {
			out = append(out, a)
			continue
		}
		if err := proto.CheckRecipient(a); err != nil {
			return nil, fmt.Errorf("recipient argument: %w; nothing sent", err)
		}
		list, err := message.ParseAddressList(a)
		if err != nil {
			return nil, fmt.Errorf("bad recipient %q: %v", a, err)
		}
		out = append(out, list...)
	}
	return out, nil
}

// QmailInject runs the qmail-inject personality: qmail-inject's options,
// $QMAILINJECT and exit codes (exitcode.Qmail: 0, 100 permanent, 111
// temporary), with zero recipients refused instead of silently lost, and
// a temporary failure spooled like sendmail's. Its error, for the caller
// to print after p.Prog, says "fatal:" as qmail-inject's do.
func QmailInject(ctx context.Context, p *Process) error {
	if err := qmailInject(ctx, p); err != nil {
		return fmt.Errorf("fatal: %w", err)
	}
	return nil
}

func qmailInject(ctx context.Context, p *Process) error {
	o, err := ParseInjectOptions(p.Args)
	if err != nil {
		return exitcode.Usage("%w", err)
	}
	cfg, err := message.ConfigFromEnv(p.Getenv)
	if err != nil {
		return exitcode.Temp(fmt.Errorf("unable to read controls: %w", err))
	}
	mopts := message.Options{}
	switch o.Recipients {
	case RecipientsArgs:
		mopts.Recipients = o.Args
	case RecipientsHeader:
		mopts.HeaderRecipients = true
	case RecipientsBoth:
		mopts.Recipients, mopts.HeaderRecipients = o.Args, true
	default:
		if len(o.Args) > 0 {
			mopts.Recipients = o.Args
		} else {
			mopts.HeaderRecipients = true
		}
	}
	if err := senderOptions(p, &cfg, &mopts, o.Sender, o.SenderSet); err != nil {
		return exitcode.Temp(err)
	}
	m, err := message.Prepare(p.Stdin, cfg, mopts)
	if err != nil {
		err = fmt.Errorf("%w; nothing sent", err)
		var refused *message.RefusedError
		if errors.As(err, &refused) || errors.Is(err, message.ErrHeaderTooLarge) {
			return exitcode.Data(err)
		}
		return exitcode.Input(err)
	}
	if o.Print {
		fmt.Fprintf(p.Stdout, "Return-Path: <%s>\n", m.Sender)
		if _, err := io.Copy(p.Stdout, m.Reader()); err != nil {
			return exitcode.Temp(err)
		}
		return nil
	}
	if len(m.Recipients) == 0 {
		return exitcode.Data(errors.New("no recipients; nothing sent (qmail-inject would have lost this message)"))
	}
	res, err := submitMessage(ctx, p, 0, m)
	if err != nil {
		return err
	}
	switch res.kind {
	case sent:
		drainInBackground(p)
		return nil
	case rejected:
		return exitcode.Perm(errors.New(proto.Printable(res.reply.Text, 2000)))
	case queued:
		p.note(false, "%s", res.queuedNote())
		return nil
	default:
		return exitcode.Temp(errors.New(res.reason))
	}
}

// Mailq lists the spool; it always exits 0 (a spool that does not exist
// yet is an empty one; what cannot be listed is said on stderr).
func Mailq(p *Process) error {
	listSpool(p)
	return nil
}

func listSpool(p *Process) {
	dir, err := spool.Locate(p.Getenv)
	if err != nil {
		p.errorf("%v", err)
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); errors.Is(err, os.ErrNotExist) {
		// No spool there (a user's ~/.qbox/spool is made only when the
		// system queue cannot take a message): nothing to name.
		fmt.Fprintln(p.Stdout, "Mail queue is empty")
	} else if _, err := (&spool.Spool{Dir: dir}).WriteListing(p.Stdout, p.now()); err != nil {
		p.errorf("%v", err)
	}
	if p.Getenv("QBOX_SPOOL") != "" {
		return
	}
	q := spool.System(p.Getenv)
	switch {
	case os.Geteuid() == 0:
		if n := spool.DropsWaiting(q); n > 0 {
			fmt.Fprintf(p.Stdout, "-- %d more in %s, waiting for pickup by sendmail -q\n", n, q.DropDir())
		}
	case q.Exists():
		// A user's mail that no server took waits in the maildrop,
		// which only root may list (its files are every user's): the
		// user's own drops are found by the names sendmail noted.
		mine := spool.MyDrops(p.Getenv, q)
		fmt.Fprintf(p.Stdout, "-- %d message(s) of yours wait in %s for root's pickup (sendmail -q, the runner); only root can list all of it: sudo mailq\n", len(mine), q.DropDir())
		for _, d := range mine {
			fmt.Fprintf(p.Stdout, "%-32s %8d %s\n", d.Name, d.Size, d.Time.Local().Format("Mon Jan _2 15:04:05"))
		}
	}
}

type outcomeKind int

const (
	sent     outcomeKind = iota // a server answered K
	rejected                    // a server answered D
	queued                      // temporary failure, safely in the spool
	failed                      // temporary failure and the spool failed too
)

type outcome struct {
	kind   outcomeKind
	reply  proto.Reply
	reason string // why it was queued, or why it failed
	where  spool.Where
}

func (o outcome) queuedNote() string {
	return fmt.Sprintf("not sent now (%s); queued in %s", o.reason, o.where)
}

// client returns the relay list client for the configured relays
// (control.Relays: $QBOX_RELAYS, control/relays, else the QMQP servers).
func client(p *Process) (*relay.Client, error) {
	// A missing or broken configuration is a temporary failure here:
	// the message waits in the spool until the relays are configured.
	relays, err := control.Relays(nil, p.Getenv, control.FileStrict)
	if errors.Is(err, control.ErrNoServers) {
		// sendmail has no --server: name its own configuration.
		return nil, fmt.Errorf("no relay configured: set $QBOX_RELAYS or list the relays in %s (or QMQP servers in $QMQPSERVERS or %s)",
			control.RelaysPath(p.Getenv), control.QMQPServersPath(p.Getenv))
	}
	if err != nil {
		return nil, err
	}
	c := &relay.Client{Relays: relays, Netrc: control.NetrcPath(p.Getenv), ConnectTimeout: 10 * time.Second, Timeout: 60 * time.Second}
	if helo, err := control.Helo(p.Getenv); err == nil {
		c.Helo = helo
	}
	return c, nil
}

// senderOptions gives -f (sender, when set) to mopts and then applies
// control/systemfrom (systemFrom).
func senderOptions(p *Process, cfg *message.Config, mopts *message.Options, sender string, set bool) error {
	if set {
		mopts.Sender = &sender
	}
	return systemFrom(p, cfg, mopts)
}

// submitMessage checks m's recipient count (checkRecipientLimit with
// maxRcpt, the flag's value or 0), reads the rest of the message and
// submits it.
func submitMessage(ctx context.Context, p *Process, maxRcpt int, m *message.Message) (outcome, error) {
	if err := checkRecipientLimit(p, maxRcpt, len(m.Recipients)); err != nil {
		return outcome{}, err
	}
	var buf spill.Buffer
	defer buf.Close()
	if _, err := io.Copy(&buf, m.Reader()); err != nil {
		return outcome{}, exitcode.Input(fmt.Errorf("reading the message: %w", err))
	}
	return submit(ctx, p, proto.Envelope{Sender: m.Sender, Recipients: m.Recipients}, &buf), nil
}

// submit sends one message over QMQP; on any temporary failure it puts
// the message in the spool. Only a D is final without the spool.
func submit(ctx context.Context, p *Process, env proto.Envelope, msg *spill.Buffer) outcome {
	var sendErr error
	c, err := client(p)
	if err != nil {
		sendErr = err
	} else {
		open := func() (io.ReadCloser, error) { return io.NopCloser(msg.Reader()), nil }
		o, err := c.SendEach(ctx, env, msg.Size(), open)
		if err != nil {
			sendErr = err // no relay answered: nothing was sent
		} else {
			split := o.Split(env.Recipients)
			switch {
			case split.Err == nil:
				return outcome{kind: sent, reply: o.Reply()}
			case split.Refused:
				return outcome{kind: rejected, reply: o.Reply()}
			}
			// A QMTP or SMTP relay answers each recipient: only those it
			// did not take are queued, so a retry never sends the
			// message twice to one who has it. A D among them comes
			// back as D from the flush, which bounces it to the sender.
			sendErr = split.Err
			env.Recipients = split.Left
		}
	}
	where, err := spool.Submit(p.Getenv, env, msg, msg.Size(), sendErr.Error())
	if err != nil {
		return outcome{kind: failed, reason: fmt.Sprintf("%v; and it could not be queued: %v", sendErr, err)}
	}
	return outcome{kind: queued, reason: sendErr.Error(), where: where}
}

// flushSpool is sendmail -q: deliver what the spool holds (the messages
// sel matches; nil: all) over QMQP to the servers the environment names
// ($QMQPSERVERS or control/qmqpservers), bouncing D replies to the
// sender, through the queue engine (queue.Run over the spool's Source).
// Quiet unless verbose or something needs a person, because cron mails
// any output and would fill the spool with reports about the spool while
// the relay is down. Nil when the spool is empty afterwards; temporary
// (75) when mail remains.
func flushSpool(ctx context.Context, p *Process, verbose bool, sel *spool.Selection) error {
	dir, err := spool.Locate(p.Getenv)
	if err != nil {
		return exitcode.Temp(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); errors.Is(err, os.ErrNotExist) {
		return nil // nothing was ever queued
	}
	sp, err := spool.Open(dir)
	if err != nil {
		return exitcode.Temp(err)
	}
	// A selection (sendmail -qI ID) sends what it names now, backoff or
	// not (spool.Backoff).
	cfg, err := message.ConfigFromEnv(p.Getenv)
	if err != nil {
		return exitcode.Temp(err)
	}
	level := slog.LevelError
	if verbose {
		level = slog.LevelInfo
	}
	lg := &queue.Logger{Log: slog.New(slog.NewTextHandler(p.Stderr, &slog.HandlerOptions{Level: level}))}
	var sender queue.QMQPSender
	if c, err := client(p); err != nil {
		sender = unconfigured{err}
	} else {
		sender = c
	}
	qc := queue.QMQPRelay(sp.Source(sel), sender, cfg.DefaultHost)
	var malformed []queue.Outcome
	qc.Events.Outcome = func(o queue.Outcome) {
		lg.Outcome(o)
		if o.Status == queue.Malformed {
			malformed = append(malformed, o)
		}
	}
	// A signal lets the message under way finish, then stops (a second
	// one at once): see package interrupt.
	sig := interrupt.Catch(ctx, p.Stderr, p.Prog)
	defer sig.Release()
	sum, err := queue.Run(sig.Context, qc)
	lg.Done(sum)
	if sum.Succeeded > 0 {
		sp.Record(spool.StampDelivery, time.Now()) // for qbox queue check and metrics; advisory
	}
	switch {
	case errors.Is(err, spool.ErrLocked):
		return exitcode.Temp(fmt.Errorf("another run is delivering %s; not starting a second one", dir))
	case err != nil && !errors.Is(err, queue.ErrRemaining) && !errors.Is(err, proto.ErrInterrupted):
		return exitcode.Temp(err)
	}
	for _, m := range malformed {
		p.errorf("malformed spool file %s left in place: %s", filepath.Join(dir, m.File), m.Note)
	}
	if verbose || sum.Interrupted {
		p.errorf("%d delivered, %d bounced, %d still queued in %s", sum.Succeeded, sum.Bounced+sum.Discarded, sum.Unsettled(), dir)
	}
	// Mail remains for a later run: what this run left, or (a run over
	// the whole spool) messages backing off after a Z.
	if sum.Interrupted || sum.Unsettled() > 0 || (sel == nil && sum.Remaining > 0) {
		return exitcode.Reported(exitcode.Temporary)
	}
	return nil
}

// unconfigured is a QMQP sender that fails temporarily: files stay
// queued until QMQP servers are configured.
type unconfigured struct{ err error }

func (u unconfigured) Send(context.Context, proto.Envelope, io.Reader, int64) (proto.Reply, error) {
	return proto.Reply{}, u.err
}

// drainInBackground starts a detached `sendmail -q` when a message just
// went through and the spool still holds mail: a relay that answers
// again is the moment to deliver the backlog, and users without a cron
// entry for sendmail -q (their mail waits in ~/.qbox/spool) get it
// delivered by their next message. The caller does not wait for it.
func drainInBackground(p *Process) {
	dir, err := spool.Locate(p.Getenv)
	if err != nil {
		return
	}
	if !spool.HasMail(dir) && spool.DropsWaiting(spool.System(p.Getenv)) == 0 {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer devnull.Close()
	cmd := exec.Command(exe, "-q")
	cmd.Args[0] = "sendmail" // the personality, whatever the binary is called
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() == nil {
		cmd.Process.Release()
	}
}

// checkRecipientLimit refuses a message with more recipients than
// allowed (flag, else control/maxrecipients, else
// spool.DefaultMaxRecipients) before anything is sent or queued: whole,
// never cut (sendmail 64).
func checkRecipientLimit(p *Process, flag, n int) error {
	limit := flag
	if limit == 0 {
		l, err := spool.MaxRecipients(p.Getenv)
		if err != nil {
			return exitcode.Temp(err)
		}
		limit = l
	}
	if err := spool.CheckRecipients(n, limit); err != nil {
		return exitcode.Usage("%d recipients, more than the %d one message may have (-O MaxRecipientsPerMessage=N or %s raise it); nothing sent",
			n, limit, spool.MaxRecipientsPath(p.Getenv))
	}
	return nil
}

// systemFrom applies the one rewriting setting for relays that insist
// ($QBOX_SYSTEM_FROM or control/systemfrom): mail from a system user
// (root, cron's jobs, www-data: uid below 1000) goes out with that
// address as envelope sender and From.
func systemFrom(p *Process, cfg *message.Config, mopts *message.Options) error {
	if !message.IsSystemUser(os.Getuid()) {
		return nil
	}
	addr, err := message.SystemFrom(p.Getenv)
	if err != nil || addr == "" {
		return err
	}
	message.ApplySystemFrom(cfg, mopts, addr)
	return nil
}
