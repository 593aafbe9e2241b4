//go:build !urfave_cli_no_docs

package qmailremote

import "qbox/commands/manpage"

// ManPages is the manual page of qmail-remote, whose arguments this
// package parses, for qbox's man page generator (`make man`); left out of
// the shipped binary with the generator (tag urfave_cli_no_docs).
var ManPages = []manpage.Page{{
	Name:     "qmail-remote",
	Section:  8,
	Usage:    "qbox as qmail-remote: send one message over QMTP or SMTP, routed as qmail routes it",
	Synopsis: `qmail-remote HOST SENDER RECIPIENT...`,
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
	SeeAlso: []string{"qbox-mx-check(1)", "qbox-serve(8)", "qmail-rspawn(8)"},
},
}
