package server

import "time"

// Limits bound what a QMQP, QMTP or SMTP server accepts: one definition
// for the three servers (and `qbox serve`, which fills it from its flags).
// Zero fields take the defaults. Each server documents what it answers
// beyond a limit.
type Limits struct {
	// MaxMessageSize is the largest message accepted, in bytes (default
	// 10 MiB). QMQP and QMTP count the message as stored (LF line ends),
	// SMTP as its SIZE extension does (CRLF line ends, before
	// dot-unstuffing).
	MaxMessageSize int64
	// MaxRecipients is the most recipients of one message (default
	// 10000).
	MaxRecipients int
	// MaxAddress is the longest sender or recipient in bytes (default
	// 1000). Longer addresses, any containing CR, LF or NUL, and the
	// empty recipient are refused where they are read (CheckSender,
	// CheckRecipient).
	MaxAddress int
	// MaxLine is the longest line of SMTP, command or message text, in
	// bytes (default 64 KiB: RFC 5321 allows 1000, but mail with longer
	// lines exists and QMTP takes it). The netstring protocols have no
	// lines and ignore it.
	MaxLine int
}

// Default limits.
const (
	DefaultMaxMessageSize = 10 << 20
	DefaultMaxRecipients  = 10000
	DefaultMaxAddress     = 1000
	DefaultMaxLine        = 64 << 10
)

// Default time bounds of a server session (Timeout and SessionLimit of
// the QMQP, QMTP and SMTP servers, and NewTimedConn's).
const (
	DefaultTimeout      = 60 * time.Second // idle: per read and per write
	DefaultSessionLimit = time.Hour        // the specs' whole-session bound
)

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxMessageSize <= 0 {
		l.MaxMessageSize = DefaultMaxMessageSize
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = DefaultMaxRecipients
	}
	if l.MaxAddress <= 0 {
		l.MaxAddress = DefaultMaxAddress
	}
	if l.MaxLine <= 0 {
		l.MaxLine = DefaultMaxLine
	}
	return l
}
