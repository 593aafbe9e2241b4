package proto

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of CheckAddress. A caller maps them to its entry point's
// permanent failure (D, sysexits 64/65, qmail-queue 91).
var (
	// ErrAddressBytes: the address holds CR, LF or NUL. Such an address is
	// refused, never rewritten: a rewritten byte changes where the mail
	// goes, and a kept one splits the header lines it is stored in.
	ErrAddressBytes = errors.New("address contains CR, LF or NUL")
	// ErrEmptyRecipient: the empty string is the null sender, never a
	// recipient.
	ErrEmptyRecipient = errors.New("empty recipient address")
)

// CheckSender is the one check every envelope sender passes where it
// enters qbox (the empty sender, for bounces, is allowed).
func CheckSender(addr string) error {
	if strings.ContainsAny(addr, "\r\n\x00") {
		return fmt.Errorf("%w: %q", ErrAddressBytes, Printable(addr, 200))
	}
	return nil
}

// CheckRecipient is the one check every envelope recipient passes where
// it enters qbox: not empty, no CR, LF or NUL.
func CheckRecipient(addr string) error {
	if addr == "" {
		return ErrEmptyRecipient
	}
	return CheckSender(addr)
}

// CheckEnvelope checks the sender and every recipient.
func CheckEnvelope(env Envelope) error {
	if err := CheckSender(env.Sender); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	for _, r := range env.Recipients {
		if err := CheckRecipient(r); err != nil {
			return fmt.Errorf("recipient: %w", err)
		}
	}
	return nil
}
