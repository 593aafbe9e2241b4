// Package exitcode carries a process exit status on an error, so a
// command's core can return an error and the CLI layer alone decides how
// the process ends.
package exitcode

import (
	"errors"
	"fmt"

	"qbox/proto"
)

// qmail's conventions, used by every command that has no personality of
// its own.
const (
	OK        = 0
	Permanent = 100
	Temporary = 111
)

// Error is an error with the exit status it should end the process with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ExitCode makes Error a cli.ExitCoder.
func (e *Error) ExitCode() int { return e.Code }

// With wraps err with an exit status.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Usage is a bad invocation or configuration: permanent.
func Usage(format string, a ...any) error {
	return &Error{Code: Permanent, Err: fmt.Errorf(format, a...)}
}

// Temp is a temporary failure.
func Temp(err error) error { return With(Temporary, err) }

// Perm is a permanent failure.
func Perm(err error) error { return With(Permanent, err) }

// Of maps an error to qmail's 0/100/111: an explicit Error keeps its code;
// a D reply is permanent; a Z reply, a network or session failure and any
// other error are temporary, because retrying an unknown failure is safer
// than dropping mail.
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var pe *proto.Error
	if errors.As(err, &pe) && !pe.Temporary() {
		return Permanent
	}
	if errors.Is(err, proto.ErrNoServers) {
		return Permanent // no server configured: a configuration error
	}
	return Temporary
}
