//go:build !urfave_cli_no_docs

package sendmail

import "qbox/commands/manpage"

// ManPages are the manual pages of the personalities this package parses
// the arguments of (sendmail, qmail-inject, mailq, newaliases), for qbox's
// man page generator (`make man`); left out of the shipped binary with the
// generator (tag urfave_cli_no_docs).
var ManPages = []manpage.Page{{
	Name:     "sendmail",
	Section:  8,
	Usage:    "qbox as the system's sendmail: send a message over QMQP, spool it when no server takes it",
	Synopsis: SendmailSynopsis,
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
   -q30m          run the queue in the foreground, for a systemd service:
                  root's runner takes each drop of the system queue as it
                  arrives (it watches maildrop/ with inotify) and retries
                  what is left every 30 minutes (s, m, h, d, w; a bare
                  number is minutes); SIGTERM stops it, exit 0. -bd -q30m
                  is the same
   -qIid, -qRrcpt, -qSsender
                  deliver only the messages whose queue ID (qbox queue
                  list), a recipient or the sender contains the text,
                  case ignored; -q!R... negates; several of one letter
                  are alternatives, different letters must all hold
   -O MaxRecipientsPerMessage=N
                  refuse (64) a message with more than N recipients;
                  default control/maxrecipients, else 10000. Other -O
                  options are ignored
   -A -B -e -G -h -L -m -N -n -O -o -p -R -U -V -X -x
                  sendmail's, accepted and ignored without a word (those
                  that take an argument take it: -h 3, -N never, -odi;
                  -O and -o other than the ones above);
                  -C FILE and unknown options are warned about on stderr,
                  never fatal

EXIT STATUS

   0    sent, or safely spooled
   64   bad usage: no recipients or more than allowed, an unsupported -b mode, a bad address
        in an argument, a name or address from the environment with CR,
        LF or NUL
   65   a bad address or header in the message
   69   the server rejected the message (D)
   74   reading the message failed
   75   neither sent nor spooled; with -q: mail remains in the spool`,
	SeeAlso: []string{"mailq(1)", "qbox-queue(1)", "qmail-inject(8)", "qbox-inject(1)"},
}, {
	Name:     "qmail-inject",
	Section:  8,
	Usage:    "qbox as qmail-inject: complete a message's header and send it over QMQP",
	Synopsis: QmailInjectSynopsis,
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
	SeeAlso: []string{"sendmail(8)", "qbox-inject(1)"},
}, {
	Name:     "mailq",
	Section:  1,
	Usage:    "qbox as mailq: list the messages waiting in the sendmail spool",
	Synopsis: `mailq`,
	Description: `Lists the messages sendmail(8) queued because no QMQP server took them, in
sendmail's layout: per message its ID (see qbox queue; '!' when held), size,
arrival time and sender, the last delivery error in parentheses, then its
recipients; then a summary. For root the queue is the system queue's
(/var/spool/qbox/queue; messages still in its maildrop are counted), for
anyone else ~/.qbox/spool; $QBOX_SPOOL names another. Another user's mail
that sendmail dropped into the system queue's maildrop, which only root may
list, is listed by the name, size and time sendmail noted in
~/.qbox/dropped (when $HOME is writable) until root's pickup takes it. sendmail -bp is the
same. Arguments are ignored. qbox queue shows, holds, releases and deletes
single messages.

EXIT STATUS

Always 0 (a spool that does not exist yet is an empty one).`,
	SeeAlso: []string{"sendmail(8)", "qbox-queue(1)"},
}, {
	Name:     "newaliases",
	Section:  8,
	Usage:    "qbox as newaliases: nothing to rebuild, succeed",
	Synopsis: `newaliases`,
	Description: `qbox keeps no alias database: aliases are the QMQP hub's business. Package
maintainer scripts call newaliases after changing /etc/aliases; this
personality prints one line saying there is nothing to do, on stderr, and
exits 0. sendmail -bi is the same (silent unless -v).

EXIT STATUS

Always 0.`,
	SeeAlso: []string{"sendmail(8)"},
},
}
