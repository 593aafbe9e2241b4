package qmailqueue

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"qbox/proto"
)

// MaxAddress is the longest envelope address read: qmail-queue refuses
// 1003 bytes or more (exit 11).
const MaxAddress = 1002

// DefaultMaxRecipients bounds the recipients read from an envelope.
const DefaultMaxRecipients = 100000

// EnvelopeError is a malformed envelope: the qmail-queue interface's exit
// 91 (ExitBadEnvelope), or 11 (ExitAddressTooLong) for an address over
// MaxAddress.
type EnvelopeError struct {
	Code   int
	Reason string
}

func (e *EnvelopeError) Error() string { return "envelope: " + e.Reason }

// ExitCode is the qmail-queue exit status for this error.
func (e *EnvelopeError) ExitCode() int { return e.Code }

// EncodeEnvelope returns env in the qmail-queue format: F<sender>\0, then
// T<rcpt>\0 per recipient, then \0.
func EncodeEnvelope(env proto.Envelope) []byte {
	return AppendEnvelope(nil, env)
}

// AppendEnvelope appends EncodeEnvelope(env) to dst.
func AppendEnvelope(dst []byte, env proto.Envelope) []byte {
	dst = append(dst, 'F')
	dst = append(dst, env.Sender...)
	dst = append(dst, 0)
	for _, r := range env.Recipients {
		dst = append(dst, 'T')
		dst = append(dst, r...)
		dst = append(dst, 0)
	}
	return append(dst, 0)
}

// ReadEnvelope reads one envelope in the qmail-queue format. The first
// item must be F<sender>; then T<rcpt> items until an empty item. Any
// other item, EOF before the terminator, an address over MaxAddress
// bytes, one holding CR or LF, or an empty recipient is an
// *EnvelopeError (proto.CheckSender and CheckRecipient, exit 91: such
// an address is refused, never passed on to be rewritten or to split a
// header line); read errors are returned as they are.
// maxRecipients <= 0 means DefaultMaxRecipients. Bytes after the
// terminator are not read (when r is not buffered).
func ReadEnvelope(r io.Reader, maxRecipients int) (proto.Envelope, error) {
	return readEnvelope(r, maxRecipients, MaxAddress)
}

// readEnvelope is ReadEnvelope with the address limit as a parameter:
// the fuzz target sets a small one, so that short inputs reach it.
func readEnvelope(r io.Reader, maxRecipients, maxAddress int) (proto.Envelope, error) {
	if maxRecipients <= 0 {
		maxRecipients = DefaultMaxRecipients
	}
	br, ok := r.(io.ByteReader)
	if !ok {
		br = bufio.NewReader(r)
	}
	var env proto.Envelope
	item, err := readItem(br, maxAddress)
	if err != nil {
		return env, err
	}
	if len(item) == 0 || item[0] != 'F' {
		return env, &EnvelopeError{ExitBadEnvelope, "first item is not F<sender>"}
	}
	env.Sender = string(item[1:])
	if err := proto.CheckSender(env.Sender); err != nil {
		return env, &EnvelopeError{ExitBadEnvelope, "sender: " + err.Error()}
	}
	for {
		item, err := readItem(br, maxAddress)
		if err != nil {
			return env, err
		}
		if len(item) == 0 {
			return env, nil
		}
		if item[0] != 'T' {
			return env, &EnvelopeError{ExitBadEnvelope, fmt.Sprintf("item %q is not T<recipient>", proto.Printable(string(item[:1]), 1))}
		}
		if len(env.Recipients) >= maxRecipients {
			return env, &EnvelopeError{ExitBadEnvelope, fmt.Sprintf("more than %d recipients", maxRecipients)}
		}
		rcpt := string(item[1:])
		if err := proto.CheckRecipient(rcpt); err != nil {
			return env, &EnvelopeError{ExitBadEnvelope, "recipient: " + err.Error()}
		}
		env.Recipients = append(env.Recipients, rcpt)
	}
}

// readItem reads up to and without the next NUL, refusing items longer
// than a prefix byte plus maxAddress before buffering more.
func readItem(br io.ByteReader, maxAddress int) ([]byte, error) {
	var item []byte
	for {
		c, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, &EnvelopeError{ExitBadEnvelope, "envelope ends before its terminating empty item"}
			}
			return nil, err
		}
		if c == 0 {
			return item, nil
		}
		if len(item) > maxAddress {
			return nil, &EnvelopeError{ExitAddressTooLong, fmt.Sprintf("address longer than %d bytes", maxAddress)}
		}
		item = append(item, c)
	}
}
