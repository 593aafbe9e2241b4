package proto

import "io"

// Message is one message to send to one or more recipients: what the
// QMTP and SMTP clients send and the queue engine (proto/queue) hands its
// transports.
type Message struct {
	Sender     string
	Recipients []string
	// Size is the message's length in bytes, LF line ends. QMTP sends it
	// as is (its encoding #2); SMTP's DATA with CRLF, dot-stuffed.
	Size int64
	// Open returns the message. A client calls it just before it sends
	// the message and closes it right after, so only one message is open
	// at a time however many are queued (SMTP opens it twice: once to
	// learn its size on the wire and whether it has 8-bit bytes, both
	// for MAIL, once to send it).
	Open func() (io.ReadCloser, error)
}

// Result is the outcome for one recipient of one message, as a client
// (QMTP, SMTP) or a queue transport (QMQP, QMTP, SMTP, MXPS) reports it:
// exactly one per recipient.
type Result struct {
	Message   int // index into the messages given to Send or Deliver
	Recipient int // index into that message's Recipients
	// Reply is the server's reply for the recipient, or a Z made up by
	// the client. SMTP's text is the server's reply as one line, code
	// first ("550 5.1.1 <x@y>: ...").
	Reply Reply
	// FromServer is true when a server sent the reply; false when the
	// client made it up because none came (no connection, the
	// connection lost, a timeout, a protocol violation, an unreadable
	// message, a message over the server's SIZE, one never started).
	FromServer bool
	// NotStarted marks a Z for a message never begun because the run
	// was asked to stop starting messages (proto.StopStarting).
	NotStarted bool
	// Server names who answered (FromServer) or was being talked to;
	// Protocol what carried the message: "QMTP", "QMQP" or "SMTP". A
	// queue transport sets both; a client leaves them to its caller.
	Server   string
	Protocol string
	// SMTP only: Stage is the reply the result comes from (StageNone
	// when made up), RcptAccepted says RCPT was accepted for it, and
	// Sent that the whole message and its "." were written before the
	// result: enough for a caller to report each step as qmail-remote
	// does (a refused sender, a refused recipient, a failed DATA, a
	// connection lost after the message, which may mean a duplicate).
	Stage        Stage
	RcptAccepted bool
	Sent         bool
}

// Stage names the SMTP reply a Result was decided by.
type Stage int

const (
	StageNone     Stage = iota // no reply: made up by the client
	StageGreeting              // the greeting refused the session
	StageHello                 // EHLO and HELO refused
	StageRset                  // RSET between messages refused
	StageMail                  // MAIL's reply
	StageRcpt                  // the recipient's RCPT reply
	StageData                  // DATA's reply (not 354)
	StageMessage               // the reply to the message's final "."
)

// SessionStats counts a client session's traffic (bytes on the network,
// TLS included).
type SessionStats struct {
	BytesOut int64 // bytes written to the connection
	BytesIn  int64 // bytes read from it
	Replies  int   // replies read (SMTP: the greeting and EHLO's included)
}

// ErrRemoteViolation is wrapped by a client's error when the server broke
// its protocol: a malformed reply, a reply for what it cannot have
// received yet (before the message's final byte), more replies than it
// was asked for. Nothing it answered from then on counts, and a queue
// run gives it no second session. It is temporary: the mail stays for a
// later run (errors.Is finds it; errors.As finds its Temporary).
var ErrRemoteViolation error = remoteViolation{}

type remoteViolation struct{}

func (remoteViolation) Error() string { return "remote protocol violation" }

// Temporary is true: the mail it concerns stays queued.
func (remoteViolation) Temporary() bool { return true }
