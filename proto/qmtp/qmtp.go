// Package qmtp implements D. J. Bernstein's Quick Mail Transfer Protocol
// (cr.yp.to/proto/qmtp.txt): a client sends packages (message, sender,
// recipient list), pipelined if it likes, and the server answers each
// recipient with one K, Z or D reply netstring, in order.
//
// The server (Server) makes these choices where the spec leaves room or
// qmail-qmtpd goes wrong:
//
//   - A package with an empty recipient list is a protocol error: the
//     server sends the replies it already owes for earlier packages, then
//     closes the connection. qmail-qmtpd answers nothing and reads on, so a
//     client waiting for its (zero) replies and a server waiting for the
//     next package hang until the one-hour alarm. Closing is the only
//     signal QMTP has left for it.
//   - On any protocol error every reply already owed is flushed before the
//     connection is closed; qmail-qmtpd loses them and its clients then
//     send mail that was already queued a second time.
//   - A session commits up to Server.Parallel (64) pipelined packages at
//     once while it reads the next ones (the store makes them durable
//     together; qmail-qmtpd commits one at a time), and
//     still replies in package order, each K only once its package is
//     durable. Replies are buffered while the next package's are ready
//     too and flushed whenever the server would otherwise wait, as the
//     spec allows; they are never reordered or merged, duplicates included.
//   - Message size: in LF mode the declared length is judged before the
//     body is read; in CR mode bytes are counted after CR LF → LF. Either
//     way the body is still read to the end and every recipient gets D
//     (#5.3.4), so the client can bounce rather than retry.
//   - Recipients beyond the limit, or beyond the memory all sessions'
//     envelopes share (Server.Envelopes), get Z (#4.5.3), as SMTP's 452
//     does: the client delivers them in a later package.
//   - An address holding CR, LF or NUL, and the empty recipient, are
//     refused where they are read, never rewritten: such a recipient gets
//     D and the others go on as usual; such a sender gets D for every
//     recipient (qmail-qmtpd accepts them, and an empty recipient's K
//     then goes nowhere).
package qmtp

// DefaultPort is QMTP's TCP port.
const DefaultPort = "209"
