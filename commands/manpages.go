// The man page generator is left out of the binary that `make build`
// ships (tag urfave_cli_no_docs, which also drops urfave/cli's markdown and
// roff libraries and their start-up cost from every personality); `make man`
// builds without the tag to run it.

//go:build !urfave_cli_no_docs

package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
)

// A ManPage is one rendered manual page (roff).
type ManPage struct {
	Name    string // qbox, qbox-inject, sendmail, ...
	Section int
	Roff    string
}

// File is the page's file name: NAME.SECTION.
func (p ManPage) File() string { return fmt.Sprintf("%s.%d", p.Name, p.Section) }

// commandSections puts the daemon in section 8; every other command is a
// user command (section 1).
var commandSections = map[string]int{"serve": 8}

// seeAlso names the pages related to each page, besides qbox(1).
var seeAlso = map[string][]string{
	"qbox-inject":        {"sendmail(8)", "qmail-qmqpc(8)", "qbox-serve(8)"},
	"qbox-serve":         {"qbox-inject(1)", "qbox-flush-maildir(1)", "qmail-qmqpc(8)"},
	"qbox-flush-maildir": {"maildirqmtp(1)", "maildirsmtp(1)", "qbox-serve(8)", "qbox-mx-check(1)"},
	"qbox-mx-check":      {"qbox-probe(1)", "qbox-flush-maildir(1)"},
	"qbox-probe":         {"qbox-mx-check(1)", "qbox-serve(8)"},
	"sendmail":           {"mailq(1)", "qbox-queue(1)", "qmail-inject(8)", "qbox-inject(1)"},
	"qmail-inject":       {"sendmail(8)", "qbox-inject(1)"},
	"mailq":              {"sendmail(8)", "qbox-queue(1)"},
	"newaliases":         {"sendmail(8)"},
	"qmail-qmqpc":        {"qbox-inject(1)", "qbox-serve(8)"},
	"maildirqmtp":        {"qbox-flush-maildir(1)", "qbox-serve(8)"},
	"maildirsmtp":        {"qbox-flush-maildir(1)", "maildirqmtp(1)"},
	"qmail-remote":       {"qbox-mx-check(1)", "qbox-serve(8)", "qmail-rspawn(8)"},
}

// qboxDescription is the DESCRIPTION of qbox(1), in the plain-text form
// of the commands' descriptions (see textToMarkdown).
const qboxDescription = `qbox is one program for D. J. Bernstein's QMQP (port 628) and QMTP (port 209):
a QMQP client (inject), a QMQP and QMTP server storing into a maildir or
handing off to qmail-queue (serve), serialmail's maildirqmtp (flush-maildir),
and two diagnostics (mx-check, probe). Each command has its own page,
qbox-COMMAND(1) (qbox-serve(8) for serve), and --help.

Run under another name (a symbolic link to qbox) it is that program, with that
program's arguments and exit codes; each has its own page:

   sendmail       complete the header, send over QMQP, spool on failure
   qmail-inject   the same with qmail-inject's options and exit codes
   mailq          list the sendmail spool
   newaliases     succeed: qbox keeps no alias database
   qmail-qmqpc    the qmail-queue interface forwarded over QMQP
   maildirqmtp    serialmail's maildirqmtp (flush-maildir)
   maildirsmtp    serialmail's maildirsmtp (flush-maildir --smtp)
   qmail-remote   qmail's remote delivery over SMTP and, to MXPS hosts, QMTP

The commands exit 0 on success, 100 on a permanent failure (bad usage,
rejected message) and 111 on a temporary one (try again later), as qmail's
programs do; mx-check and probe report what they found in their own codes.

QMQP is not a public service: it carries no authentication. Bind serve to
loopback or a private network and list the clients with --allow.

ENVIRONMENT

   QMQPSERVERS    QMQP servers (comma or space separated) for inject,
                  qmail-qmqpc, the sendmail personalities and bounces
   QMAILHOME      where control/qmqpservers, control/me and friends are
                  (default /var/qmail; the qmail-remote personality, when
                  it is unset, takes the home qmail-rspawn runs it in)
   QBOX_SPOOL     the sendmail spool (default: the system queue, else
                  ~/.qbox/spool)
   QBOX_SYSTEM_QUEUE  the system queue (default /var/spool/qbox)`

// personalityApps describes the personalities for their manual pages.
// Their real parsers are hand-written (sendmail's lenient getopt,
// qmail-inject's strict one), so these apps are documentation only: they
// are never run.
func personalityApps() []struct {
	section int
	app     *cli.App
} {
	type page = struct {
		section int
		app     *cli.App
	}
	return []page{
		{8, &cli.App{
			Name:  "sendmail",
			Usage: "qbox as the system's sendmail: send a message over QMQP, spool it when no server takes it",
			UsageText: `sendmail [-t] [-i] [-f SENDER] [-F NAME] [-v] [RECIPIENT ...] < message
sendmail -bs
sendmail -bp
sendmail -q [-v]`,
			Description: `Reads a message on stdin, completes its header as qmail-inject does (Date,
Message-ID and From added when missing; Bcc, Resent-Bcc, Return-Path and
Content-Length removed; CRLF becomes LF) and sends it over QMQP to the first
server in $QMQPSERVERS or $QMAILHOME/control/qmqpservers that takes the
connection. Several addresses in one argument ("a@x, b@y") are split. A line
holding only "." does not end the message: the message is all of stdin.

An address holding CR, LF or NUL (an argument, -f, a -t header field, a -bs
MAIL or RCPT) and an empty recipient are refused, never rewritten: exit 64 for
an argument, 65 for the message's header, 553 in -bs. A full name (-F,
$QMAILNAME, $MAILNAME, $NAME) holding CR, LF or NUL is refused with 64, not
encoded, when it would go into an added From: it never splits a header. In
-bs only CRLF "." CRLF ends DATA; a "." line before or after a bare LF is text
(Postfix's smtpd_forbid_bare_newline = normalize), so no second message can be
smuggled inside one.

When no server takes the message right now (none configured, none reachable,
Z), it is written, fsync'd, into the system queue (/var/spool/qbox, made by
make install: any user drops mail into its maildrop/, root's sendmail -q picks
it up, recording the uid, and delivers it), else ~/.qbox/spool ($QBOX_SPOOL
overrides both) and sendmail exits 0: a relay outage never loses mail; when
nothing could take it, sendmail exits 75 and says why. The note that a
message was queued goes to syslog's mail facility, and to stderr only when
stderr is a terminal or with -v (cron mails every line). sendmail -q
delivers the queue (run it from cron as root); after a
message goes through, a detached sendmail -q starts by itself when the spool
holds mail. A spooled message rejected with D, or still queued after 14 days,
is bounced to its sender. Only a D for a message not yet spooled is reported
as a failure.

Options sendmail's callers pass that mean nothing here (-oem, -N, -U, -m, ...)
are accepted with a warning on stderr, never refused: an MTA that refuses an
option loses the caller's mail.

QMAIL'S HOME

The control files are under $QMAILHOME/control, else /var/qmail/control,
wherever sendmail is run from: its callers run it from any directory, which says nothing about qmail's home.

OPTIONS

   -t             also send to the To, Cc and Bcc recipients of the header
                  (Resent-To, Resent-Cc, Resent-Bcc when there are Resent-
                  fields)
   -i, -oi        accepted; a lone "." never ends the message anyway
   -f SENDER      envelope sender (-f '<>' is the null sender); also the
                  user and host of an added From
   -r SENDER      the same as -f
   -F NAME        the full name in an added From (refused with CR, LF or
                  NUL)
   -v             say what happened on stderr
   -bm            send a message (the default)
   -bs            an SMTP session on stdin and stdout (HELO, EHLO, MAIL,
                  RCPT, DATA, RSET, NOOP, QUIT; size limit $QBOX_MAX_SIZE
                  bytes, default 64 MiB)
   -bp            list the spool, as mailq
   -bi            newaliases: nothing to do, succeed
   -q             deliver the queue now (root: after picking up the
                  system queue's drop files)
   -q30m          run the queue every 30 minutes in the foreground (s, m,
                  h, d, w; a bare number is minutes), for a systemd
                  service; SIGTERM stops it, exit 0. -bd -q30m is the same
   -qIid, -qRrcpt, -qSsender
                  deliver only the messages whose queue ID (qbox queue
                  list), a recipient or the sender contains the text,
                  case ignored; -q!R... negates; several of one letter
                  are alternatives, different letters must all hold

EXIT STATUS

   0    sent, or safely spooled
   64   bad usage: no recipients, an unsupported -b mode, a bad address
        in an argument, a name or address from the environment with CR,
        LF or NUL
   65   a bad address or header in the message
   69   the server rejected the message (D)
   74   reading the message failed
   75   neither sent nor spooled; with -q: mail remains in the spool`,
		}},
		{8, &cli.App{
			Name:      "qmail-inject",
			Usage:     "qbox as qmail-inject: complete a message's header and send it over QMQP",
			UsageText: `qmail-inject [-aAhHnN] [-f SENDER] [RECIPIENT ...] < message`,
			Description: `qmail-inject's interface in front of the same machinery as sendmail(8): the
header is completed as qmail-inject does, under the control files in
$QMAILHOME/control (me, defaulthost, defaultdomain, plusdomain, idhost) and
the variables QMAILUSER, QMAILHOST, QMAILNAME, QMAILSUSER, QMAILSHOST,
QMAILDEFAULTHOST and friends, then the message goes over QMQP to
$QMQPSERVERS or control/qmqpservers, or into the spool when no server takes
it. Options are parsed strictly, as qmail-inject does: an unknown one is a
usage error. A message with no recipient at all is refused (qmail-inject
would silently lose it). An address holding CR, LF or NUL (an argument, -f, a
header field), an empty recipient, and a full name ($QMAILNAME, $MAILNAME,
$NAME) holding CR, LF or NUL that would go into an added From are refused with
100, never rewritten or encoded.

QMAIL'S HOME

The control files are under $QMAILHOME/control, else /var/qmail/control,
wherever qmail-inject is run from: its callers run it from any directory, which says nothing about qmail's home.

OPTIONS

   -a             recipients from the arguments only
   -A             the arguments if any, else the header (the default)
   -h             recipients from the header only
   -H             the header and the arguments
   -n             print the completed message instead of sending it
   -N             send it (the default)
   -f SENDER      envelope sender

$QMAILINJECT letters: c (From with the name in a comment), s (ignore an
incoming Return-Path), f (delete an incoming From), i (delete an incoming
Message-ID), r (per-recipient VERP), m (per-message VERP).

EXIT STATUS

   0    sent, or safely spooled
   100  permanent: bad usage, a bad address or header, no recipients, D
   111  temporary: neither sent nor spooled, the configuration unreadable`,
		}},
		{1, &cli.App{
			Name:      "mailq",
			Usage:     "qbox as mailq: list the messages waiting in the sendmail spool",
			UsageText: `mailq`,
			Description: `Lists the messages sendmail(8) queued because no QMQP server took them, in
sendmail's layout: per message its ID (see qbox queue; '!' when held), size,
arrival time and sender, the last delivery error in parentheses, then its
recipients; then a summary. For root the queue is the system queue's
(/var/spool/qbox/queue; messages still in its maildrop are counted), for
anyone else ~/.qbox/spool; $QBOX_SPOOL names another. sendmail -bp is the
same. Arguments are ignored. qbox queue shows, holds, releases and deletes
single messages.

EXIT STATUS

Always 0 (a spool that does not exist yet is an empty one).`,
		}},
		{8, &cli.App{
			Name:      "newaliases",
			Usage:     "qbox as newaliases: nothing to rebuild, succeed",
			UsageText: `newaliases`,
			Description: `qbox keeps no alias database: aliases are the QMQP hub's business. Package
maintainer scripts call newaliases after changing /etc/aliases; this
personality prints one line saying there is nothing to do, on stderr, and
exits 0. sendmail -bi is the same (silent unless -v).

EXIT STATUS

Always 0.`,
		}},
		{8, &cli.App{
			Name:      "qmail-qmqpc",
			Usage:     "qbox as qmail-qmqpc: the qmail-queue interface, forwarded over QMQP",
			UsageText: `qmail-qmqpc < message 1< envelope`,
			Description: `Reads a message on descriptor 0 and a qmail-queue envelope (F sender, T
recipients) on descriptor 1, and sends them untouched over QMQP to the
servers in $QMQPSERVERS (comma or space separated), else in
$QMAILHOME/control/qmqpservers, tried in order; the next one only
when the connection to this one fails. It can stand in as mini-qmail's
bin/qmail-queue (a link to qbox named qmail-queue behaves the same), be
named by $QMAILQUEUE, or serve as qbox serve's
--queue-program to relay to a cluster. Besides IPv4 addresses, qmqpservers
may hold host names and HOST:PORT.

The message is read completely before the envelope, because a caller such as
qmail-inject writes the envelope only after closing the message pipe; a
message on a regular file is measured, not read.

QMAIL'S HOME

The control files are under $QMAILHOME/control, else /var/qmail/control,
wherever qmail-qmqpc is run from: qmail runs it as qmail-queue from qmail-inject, qmail-smtpd, qmail-qmtpd,
qmail-local or qmail-send, each in its own working directory, so the directory
says nothing about the home (qmail-remote's rule, see qmail-remote(8), does not
apply).

EXIT STATUS

qmail-queue's codes:

   0    the server accepted the message (K)
   31   the server rejected it (D)
   54   reading the message or envelope failed
   55   no usable server in control/qmqpservers, or a bad one in
        $QMQPSERVERS
   71   the server deferred it (Z)
   72   the last connection timed out
   73   the last connection was refused
   74   communication failed after connecting
   91   a malformed envelope, an address in it with CR or LF, an empty
        recipient`,
		}},
		{1, &cli.App{
			Name:      "maildirqmtp",
			Usage:     "qbox as serialmail's maildirqmtp: send a maildir's mail to a QMTP server",
			UsageText: `maildirqmtp DIR PREFIX HOST[:PORT]`,
			Description: `serialmail's maildirqmtp, with its arguments: sends every message in DIR whose
Delivered-To starts with PREFIX to the QMTP server HOST, over one pipelined
connection, and removes each file only after the server's K. It is qbox
flush-maildir with its defaults; see qbox-flush-maildir(1) for the details and
for the options this form does not take. Permanent failures, and messages
deferred for more than 14 days, are bounced to their senders over QMQP
($QMQPSERVERS or $QMAILHOME/control/qmqpservers; $QMAILHOME, else /var/qmail,
wherever it is run from).

EXIT STATUS

   0    nothing left in the maildir
   100  bad usage or configuration
   111  messages remain, or the server could not be reached`,
		}},
		{1, &cli.App{
			Name:      "maildirsmtp",
			Usage:     "qbox as serialmail's maildirsmtp: send a maildir's mail to an SMTP server",
			UsageText: `maildirsmtp DIR PREFIX HOST[:PORT] HELOHOST`,
			Description: `serialmail's maildirsmtp, with its arguments: sends every message in DIR whose
Delivered-To starts with PREFIX to the SMTP server HOST (port 25), saying EHLO
(HELO when EHLO is refused) as HELOHOST, over one session, pipelined when the
server offers PIPELINING, with STARTTLS whenever offered. Each file is removed
only after the server accepted its recipient and the message. It is qbox
flush-maildir --smtp HOST --helo HELOHOST with its defaults; see
qbox-flush-maildir(1). A 5xx for a recipient, and a message deferred (4xx) for
more than 14 days, is bounced to its sender over QMQP ($QMQPSERVERS or
$QMAILHOME/control/qmqpservers; $QMAILHOME, else /var/qmail, wherever it is
run from).

The dial-up site whose provider takes mail only over SMTP: deliver outgoing mail
into ~alias/pppdir (qmail: ":alias-ppp" in virtualdomains and a
.qmail-ppp-default), then, once the link is up:

   maildirsmtp ~alias/pppdir alias-ppp- smtp.isp.example $(hostname)

EXIT STATUS

   0    nothing left in the maildir
   100  bad usage or configuration
   111  messages remain, or the server could not be reached`,
		}},
		{8, &cli.App{
			Name:      "qmail-remote",
			Usage:     "qbox as qmail-remote: send one message over QMTP or SMTP, routed as qmail routes it",
			UsageText: `qmail-remote HOST SENDER RECIPIENT...`,
			Description: `qmail's qmail-remote, with its interface: qmail-rspawn runs it with the remote
HOST, the envelope SENDER and the RECIPIENTs as arguments and the message on
fd 0, and reads its reports on fd 1. It takes no options and always exits 0.

Besides SMTP it speaks QMTP, as Russell Nelson's qmtpc patch does: an
exchanger whose MX preference is in MXPS's QMTP slice (12801+16k) gets the
message over QMTP on port 209 first, and over SMTP on port 25 at the same
address only when that connection attempt fails, never once a QMTP session has
started. qmail-rspawn runs $QMAILREMOTE instead of qmail-remote when it is set
(notqmail, netqmail), so a qmail site joins the QMTP set without a rebuild:

   # qmail-send's run script (/service/qmail-send/run)
   exec env - PATH="/var/qmail/bin:$PATH" \
     QMAILREMOTE=/usr/local/bin/qmail-remote qmail-start ./Maildir/

$QMAILREMOTE must name a link called qmail-remote (make install creates
/usr/local/bin/qmail-remote), never the qbox binary itself: qbox finds its
personality by the name it is run as. For a qmail without $QMAILREMOTE, the
link itself:

   mv /var/qmail/bin/qmail-remote /var/qmail/bin/qmail-remote.orig
   ln -s /usr/local/bin/qbox /var/qmail/bin/qmail-remote

Started by qmail-rspawn as qbox (or any name that is not a personality), qbox
recognizes qmail-rspawn's working directory (see QMAIL'S HOME) and its
arguments, and defers each message with a Z report saying how to make the link
and exit 0, instead of the usage error whose exit 100 qmail-rspawn would turn
into a bounce ("Unable to run qmail-remote").

QMAIL'S HOME

qmail-remote finds qmail's home as one compiled for it does: $QMAILHOME when
set; otherwise, when the working directory is DIR/queue/mess (qmail-rspawn
changes to its compiled-in home, then to queue/mess, before it runs
qmail-remote), DIR; otherwise /var/qmail. A qmail at another prefix needs no
$QMAILHOME. The control directory must exist (it may be empty): a missing or
unreadable control directory or file is a Z, "Unable to read control files.
(#4.3.0)", followed by the path, where the home came from and what to change,
so the mail stays queued; a misconfiguration never costs the bounce a DNS
lookup without the routes would give.

ROUTING

HOST is a domain, whose MX records give the exchangers in preference order
(random among equals; without MX records the domain's own addresses, as a
preference 0 MX), or an address in brackets, [192.0.2.1], reached over SMTP.
A route overrides both: control/qmtproutes and control/smtproutes hold lines
DOMAIN:RELAY or DOMAIN:RELAY:PORT, as qmail's smtproutes does; DOMAIN is
matched against HOST, then against each of its suffixes starting at a dot
(.example.com), then against the empty domain, the default route; the first
match decides, qmtproutes before smtproutes at the same level. A qmtproutes
route sends the mail over QMTP to RELAY (port 209 unless given), an smtproutes
route over SMTP (port 25 unless given); RELAY's addresses are used, never its
MX records, and an empty RELAY means "use DNS". Lines starting with # are
comments; the last line for a domain wins.

REPORTS

One report per recipient, in the order of the arguments: r (accepted), h
(permanently refused) or s (temporarily refused), a text, and a 0 byte; then
one report for the message: K (delivered to every accepted recipient), Z
(temporary failure) or D (permanent failure), a text, and a 0 byte. The texts
are qmail-remote's ("Remote host said: 550 ...", "Connected to 192.0.2.1 but
sender was rejected.", "Sorry, I wasn't able to establish an SMTP connection.
(#4.4.1)"), with the server's words on one line; a second line may add qbox's
own account of a failure. As with qmail-remote there are fewer recipient
reports than recipients when the session failed before they were answered
(qmail-rspawn then takes the message report for them). A QMTP session answers
every recipient: each gets its report, and the message report is K when any
was accepted. A QMTP session that dies or times out before the replies came is
reported as qmail-remote reports an SMTP session that dies: the reports of the
recipients answered so far, then Z "Connected to 192.0.2.1 but connection
died. (#4.4.2)" alone, so qmail's log carries the sentence once (only when a
recipient was accepted first, with K, do the unanswered ones get an s).

A SENDER with CR, LF or NUL is refused with D; such a RECIPIENT, or an empty
one, gets h, and the others are sent.

CONTROL FILES

Under control in qmail's home (see QMAIL'S HOME):

   helohost        the name for EHLO/HELO; default: me, then the host name
   me              see helohost
   smtproutes      SMTP routes, as above
   qmtproutes      QMTP routes, as above
   timeoutconnect  seconds to wait for a connection; default 60
   timeoutremote   seconds to wait for each reply or write; default 1200

ENVIRONMENT

   QMAILHOME       qmail's home; unset: see QMAIL'S HOME
   QBOX_RESOLVER   HOST:PORT of a DNS server to ask instead of the system's
   QBOX_QMTP_PORT  port for MXPS's QMTP attempts instead of 209
   QBOX_SMTP_PORT  port for MX and [address] SMTP attempts instead of 25

Not done as qmail-remote does: exchangers that are this host are not skipped
(qmail-send hands qmail-remote only non-local domains), and no tcpto record of
unreachable hosts is kept or consulted.

EXIT STATUS

   0    always; the reports say what happened`,
		}},
	}
}

// ManPages renders qbox(1), a page for each visible command of app (the
// running application, so the pages document exactly its flags) and one
// for each personality.
func ManPages(app *cli.App) ([]ManPage, error) {
	var pages []ManPage
	var commands []*cli.Command
	for _, c := range app.Commands {
		if !c.Hidden && c.Name != "help" {
			commands = append(commands, c)
		}
	}
	top := &cli.App{Name: "qbox", Usage: app.Usage, Description: textToMarkdown(qboxDescription), Commands: commands}
	var synopsis []string
	for _, c := range commands {
		synopsis = append(synopsis, commandSynopsis(c))
	}
	synopsis = append(synopsis, "qbox --help | --version")
	var all []string
	for _, c := range commands {
		all = append(all, fmt.Sprintf("qbox-%s(%d)", c.Name, section(c.Name)))
	}
	for _, p := range personalityApps() {
		all = append(all, fmt.Sprintf("%s(%d)", p.app.Name, p.section))
	}
	page, err := render(top, 1, synopsis, all)
	if err != nil {
		return nil, err
	}
	pages = append(pages, page)

	for _, c := range commands {
		a := &cli.App{
			Name:        "qbox-" + c.Name,
			Usage:       c.Usage,
			Description: textToMarkdown(c.Description),
			Flags:       c.Flags,
		}
		page, err := render(a, section(c.Name), []string{commandSynopsis(c)}, append([]string{"qbox(1)"}, seeAlso[a.Name]...))
		if err != nil {
			return nil, err
		}
		pages = append(pages, page)
	}
	for _, p := range personalityApps() {
		a := *p.app
		a.Description = textToMarkdown(a.Description)
		a.UsageText = ""
		page, err := render(&a, p.section, strings.Split(p.app.UsageText, "\n"), append([]string{"qbox(1)"}, seeAlso[a.Name]...))
		if err != nil {
			return nil, err
		}
		pages = append(pages, page)
	}
	return pages, nil
}

// commandSynopsis is how the command is typed.
func commandSynopsis(c *cli.Command) string {
	s := "qbox " + c.Name
	if len(c.Flags) > 0 {
		s += " [options]"
	}
	return s + " " + c.ArgsUsage
}

func section(command string) int {
	if s, ok := commandSections[command]; ok {
		return s
	}
	return 1
}

var (
	// urfave/cli's template puts a "Usage:" block after the description;
	// the SYNOPSIS written here says it better.
	usageBlock = regexp.MustCompile(`\n\.PP\n\\fBUsage\\fP:\n\n\.EX\n(?s:.*?)\n\.EE\n`)
	synopsisTo = regexp.MustCompile(`(?s)\.SH SYNOPSIS\n.*?(\n\.SH |$)`)
	titleLine  = regexp.MustCompile(`(?m)^\.TH .*$`)
)

// render turns a documentation app into a roff page with urfave/cli's man
// page renderer, then gives it the real synopsis (the command as typed,
// not the page's name), calls the flags OPTIONS rather than GLOBAL
// OPTIONS, and adds a SEE ALSO section.
func render(a *cli.App, sec int, synopsis, see []string) (ManPage, error) {
	roff, err := a.ToManWithSection(sec)
	if err != nil {
		return ManPage{}, fmt.Errorf("rendering %s(%d): %w", a.Name, sec, err)
	}
	roff = usageBlock.ReplaceAllString(roff, "\n")
	var syn strings.Builder
	syn.WriteString(".SH SYNOPSIS\n")
	for i, line := range synopsis {
		if i > 0 {
			syn.WriteString(".br\n")
		}
		syn.WriteString(roffSynopsis(strings.TrimSpace(line)) + "\n")
	}
	replaced := false
	roff = synopsisTo.ReplaceAllStringFunc(roff, func(m string) string {
		replaced = true
		next := synopsisTo.FindStringSubmatch(m)[1]
		return syn.String() + next
	})
	if !replaced {
		return ManPage{}, fmt.Errorf("rendering %s(%d): no SYNOPSIS in urfave/cli's page", a.Name, sec)
	}
	roff = strings.Replace(roff, "\n.SH GLOBAL OPTIONS\n", "\n.SH OPTIONS\n", 1)
	roff = manFlags(roff, allFlags(a.Flags, a.Commands))
	// .TH first (urfave/cli puts .nh, no hyphenation, before it).
	roff = strings.TrimPrefix(strings.TrimLeft(roff, "\n"), ".nh\n")
	roff = titleLine.ReplaceAllLiteralString(roff, fmt.Sprintf(`.TH "%s" "%d" "" "qbox %s" "qbox manual"`+"\n.nh", strings.ToUpper(a.Name), sec, Version))
	roff = strings.TrimRight(roff, "\n") + "\n\n.SH SEE ALSO\n" + roffEscape(strings.Join(see, ", ")) + "\n"
	return ManPage{Name: a.Name, Section: sec, Roff: roff}, nil
}

// allFlags lists flags and those of commands and their subcommands.
func allFlags(flags []cli.Flag, commands []*cli.Command) []cli.Flag {
	all := append([]cli.Flag(nil), flags...)
	for _, c := range commands {
		all = append(all, allFlags(c.Flags, c.Subcommands)...)
	}
	return all
}

// roffSynopsis sets a synopsis line with the program's words in bold:
// everything before the first option or argument placeholder.
func roffSynopsis(line string) string {
	words := strings.Fields(line)
	n := 0
	for n < len(words) && isProgramWord(words[n]) {
		n++
	}
	n = max(n, 1)
	out := `\fB` + roffEscape(strings.Join(words[:n], " ")) + `\fR`
	if rest := strings.Join(words[n:], " "); rest != "" {
		out += " " + roffEscape(rest)
	}
	return out
}

// isProgramWord: a lower-case word such as "qbox" or "flush-maildir",
// not "[options]", "DIR" or "-t".
func isProgramWord(w string) bool {
	if w == "" || w[0] == '-' {
		return false
	}
	for _, r := range w {
		if !(r >= 'a' && r <= 'z' || r == '-') {
			return false
		}
	}
	return true
}

// roffEscape makes text safe on a roff text line.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// textToMarkdown turns the plain-text descriptions of the commands into
// the Markdown urfave/cli renders: paragraphs stay paragraphs with their
// Markdown characters escaped, indented lines (examples, tables) become
// verbatim blocks, and a paragraph that is one upper-case line (OPTIONS,
// EXIT STATUS) becomes a section heading.
func textToMarkdown(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var out []string
	blank := func() {
		if len(out) > 0 && out[len(out)-1] != "" {
			out = append(out, "")
		}
	}
	verbatim := false
	for i, l := range lines {
		l = strings.TrimRight(l, " \t")
		switch {
		case l == "":
			blank()
			verbatim = false
		case l[0] == ' ' || l[0] == '\t':
			if !verbatim {
				blank()
				verbatim = true
			}
			// Drop the text's own indentation (up to three spaces)
			// and indent by four: a Markdown code block.
			trimmed := l
			for k := 0; k < 3 && strings.HasPrefix(trimmed, " "); k++ {
				trimmed = trimmed[1:]
			}
			out = append(out, "    "+trimmed)
		case isHeading(lines, i):
			blank()
			out = append(out, "# "+l, "")
			verbatim = false
		default:
			if verbatim {
				blank()
				verbatim = false
			}
			out = append(out, escapeMarkdown(l))
		}
	}
	return strings.Join(out, "\n")
}

// isHeading: line i is upper case and alone in its paragraph.
func isHeading(lines []string, i int) bool {
	l := lines[i]
	if strings.ToUpper(l) != l || strings.ToLower(l) == l || strings.TrimFunc(l, func(r rune) bool { return r >= 'A' && r <= 'Z' || r == ' ' }) != "" {
		return false
	}
	before := i == 0 || strings.TrimSpace(lines[i-1]) == ""
	after := i == len(lines)-1 || strings.TrimSpace(lines[i+1]) == ""
	return before && after
}

// escapeMarkdown backslash-escapes what Markdown would read as markup,
// so the text prints as written.
func escapeMarkdown(l string) string {
	var b strings.Builder
	for i, r := range l {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '<', '>', '#', '&', '~', '|':
			b.WriteByte('\\')
		case '-', '+':
			if i == 0 {
				b.WriteByte('\\')
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

// WriteManPages renders the pages and writes each into dir (created if
// missing) as NAME.SECTION; it returns the files written.
func WriteManPages(app *cli.App, dir string) ([]string, error) {
	pages, err := ManPages(app)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, p := range pages {
		path := filepath.Join(dir, p.File())
		if err := os.WriteFile(path, []byte(p.Roff), 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

// manCommand is `qbox man DIR`: hidden, for `make man` and packagers.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Usage:     "write the manual pages (qbox(1), one per command and personality) into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return exitcode.Usage("usage: qbox man DIR")
			}
			files, err := WriteManPages(c.App, c.Args().First())
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintln(c.App.Writer, f)
			}
			return nil
		},
	}
}
