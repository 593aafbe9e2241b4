//go:build !urfave_cli_no_docs

package flush

import "qbox/commands/manpage"

// ManPages are the manual pages of serialmail's maildirqmtp and
// maildirsmtp, whose arguments this package parses, for qbox's man page
// generator (`make man`); left out of the shipped binary with the
// generator (tag urfave_cli_no_docs).
var ManPages = []manpage.Page{{
	Name:     "maildirqmtp",
	Section:  1,
	Usage:    "qbox as serialmail's maildirqmtp: send a maildir's mail to a QMTP server",
	Synopsis: MaildirqmtpSynopsis,
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
	SeeAlso: []string{"qbox-flush-maildir(1)", "qbox-serve(8)"},
}, {
	Name:     "maildirsmtp",
	Section:  1,
	Usage:    "qbox as serialmail's maildirsmtp: send a maildir's mail to an SMTP server",
	Synopsis: MaildirsmtpSynopsis,
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
	SeeAlso: []string{"qbox-flush-maildir(1)", "maildirqmtp(1)"},
},
}
