//go:build !urfave_cli_no_docs

package inject

import "qbox/commands/manpage"

// ManPages are the manual pages of qmail-qmqpc, whose arguments this
// package parses, and of qmail-queue, mini-qmail's name for it, for qbox's
// man page generator (`make man`); left out of the shipped binary with the
// generator (tag urfave_cli_no_docs).
var ManPages = []manpage.Page{{
	Name:     "qmail-qmqpc",
	Section:  8,
	Usage:    "qbox as qmail-qmqpc: the qmail-queue interface, forwarded over QMQP",
	Synopsis: `qmail-qmqpc < message 1< envelope`,
	Description: `Reads a message on descriptor 0 and a qmail-queue envelope (F sender, T
recipients) on descriptor 1, and sends them untouched over QMQP to the
servers in $QMQPSERVERS (comma or space separated), else in
$QMAILHOME/control/qmqpservers, tried in order; the next one only
when the connection to this one fails. It can stand in as mini-qmail's
bin/qmail-queue (a link to qbox named qmail-queue behaves the same), be
named by $QMAILQUEUE, or serve as qbox serve's
--queue-program to relay to a cluster. Besides IPv4 addresses, qmqpservers
may hold host names and HOST:PORT.

It speaks QMQP only ($QBOX_RELAYS and control/relays are not its list; a relay
URL in $QMQPSERVERS is no server): QMQP answers once for the whole message,
so an answer never takes some recipients and not others, and the exit status
is always the verdict on every recipient.

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
	SeeAlso: []string{"qbox-inject(1)", "qbox-serve(8)"},
}, {
	Name:     "qmail-queue",
	Section:  8,
	Usage:    "qbox as mini-qmail's qmail-queue: qmail-qmqpc under the name qmail-queue",
	Synopsis: `qmail-queue < message 1< envelope`,
	Description: `mini-qmail queues nothing itself: its bin/qmail-queue is qmail-qmqpc, which
forwards each message over QMQP to a central queue. A link to qbox named
qmail-queue is qmail-qmqpc(8), with the same input (the message on descriptor
0, the envelope on descriptor 1), the same servers ($QMQPSERVERS, else
$QMAILHOME/control/qmqpservers), the same control files and the same exit
codes: qmail-queue's, which is what its callers (qmail-inject, qmail-smtpd,
qmail-qmtpd, qmail-local, qmail-send) expect. qmail-qmqpc(8) describes it.

   ln -sf /usr/local/bin/qbox /var/qmail/bin/qmail-queue

A qmail-queue link is for mini-qmail's bin/ (or $QMAILQUEUE), not for a
system whose own qmail queues locally: there bin/qmail-queue is qmail's.

EXIT STATUS

qmail-queue's, as qmail-qmqpc(8) lists them: 0 the server accepted the
message, 31 it rejected it, 71 it deferred it, 72 to 74 the connection failed,
54, 55 and 91 bad input or configuration.`,
	SeeAlso: []string{"qmail-qmqpc(8)", "qbox-inject(1)", "qbox-serve(8)"},
},
}
