// Package exitcode is the one place where an error becomes a process exit
// status. Errors carry what the failure means (Class: temporary,
// permanent, usage, configuration, or a check's finding with its
// Verdict); each personality names its Scheme (qmail's 0/100/111,
// qmail-queue's, sysexits, the probe's and mx-check's, Nagios); Code maps
// an error to a status under a scheme. Commands and personalities return
// errors and never pick a number themselves.
package exitcode

import (
	"errors"
	"fmt"

	"qbox/proto"
)

// Class is what a failure means to whoever runs the command again.
type Class int

const (
	OK        Class = iota // no failure
	Temporary              // try again later: nothing was done, or the outcome is unknown
	Permanent              // the same call fails the same way again
	BadUsage               // the command line is wrong
	BadConfig              // the configuration is missing or wrong (no server configured)
	// Finding is a check's finding (probe, mx-check, queue check): the
	// check ran, and what it looked at is not as wanted. Its Verdict
	// says how bad; the check's scheme numbers it.
	Finding
	numClasses
)

var classNames = [numClasses]string{"ok", "temporary", "permanent", "usage", "configuration", "finding"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Properties an error may have beyond its class, for the schemes that
// tell them apart (errors.Is finds them).
var (
	// ErrInput: reading the input (the message, the envelope) failed.
	// Temporary; qmail-queue's 54, sysexits' 74.
	ErrInput = errors.New("reading the input failed")
	// ErrData: the message, or an address in it, is refused. Permanent;
	// sysexits' 65.
	ErrData = errors.New("the message is refused")
)

// Verdict is what a check (probe, mx-check, queue check) found about
// what it looked at, in the words of a monitoring plugin. The order is
// from best to worst as the checks rank several findings (max gives the
// worst): UNKNOWN last, because a finding that could not be made (DNS
// could not answer) must not hide behind one that could. Each check's
// scheme numbers the verdicts: Nagios 0/1/2/3, probe 0/1/2, mx-check
// 0/1/100/111.
type Verdict int

const (
	VerdictOK       Verdict = iota // as wanted
	VerdictWarning                 // not as wanted, still working (something else answers; no QMTP exchanger)
	VerdictCritical                // broken (closed, unreachable; the domain does not exist; the queue too old)
	VerdictUnknown                 // the check could not tell (DNS could not answer now; the queue cannot be read)
	numVerdicts
)

var verdictNames = [numVerdicts]string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}

// String is the verdict's word on a Nagios status line: OK, WARNING,
// CRITICAL or UNKNOWN.
func (v Verdict) String() string {
	if v >= 0 && v < numVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Error is an error with its class. Err nil means the failure was
// already reported (a usage line, a check's status line): nothing more
// is printed.
type Error struct {
	Class Class
	Err   error
	prop  error // ErrInput, ErrData or nil
	// verdict is a check's verdict, numbered by its scheme's verdict
	// statuses; set by Found only.
	verdict Verdict
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Class.String() + " failure"
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInput) and (err, ErrData) true for an error
// made by Input and Data.
func (e *Error) Is(target error) bool { return e.prop != nil && target == e.prop }

func with(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: c, Err: err}
}

// Temp marks err temporary, Perm permanent, Configuration a configuration
// fault; nil stays nil.
func Temp(err error) error          { return with(Temporary, err) }
func Perm(err error) error          { return with(Permanent, err) }
func Configuration(err error) error { return with(BadConfig, err) }

// Usage is a bad invocation.
func Usage(format string, a ...any) error {
	return &Error{Class: BadUsage, Err: fmt.Errorf(format, a...)}
}

// Input marks err as a failure to read the input: temporary.
func Input(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: Temporary, Err: err, prop: ErrInput}
}

// Data marks err as a refusal of the message or an address in it:
// permanent.
func Data(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: Permanent, Err: err, prop: ErrData}
}

// Reported is a failure of class c already reported to the user.
func Reported(c Class) error {
	if c == OK {
		return nil
	}
	return &Error{Class: c}
}

// Silent reports whether err was already reported (Reported).
func Silent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Err == nil
}

// ClassOf says what err means: the class it was given; else what the
// protocol layer's errors say of themselves through their Temporary
// method (maddy's style): a reply (*proto.Error: D permanent, Z
// temporary), no server reached (*proto.ConnectError: temporary; with
// nothing to try, proto.ErrNoServers, a configuration fault), a server
// that broke its protocol (proto.ErrRemoteViolation: temporary). Only an
// error none of these is in (a local file, a full disk) falls back to
// temporary, because retrying an unknown failure is safer than dropping
// mail. The standard library's Temporary methods are not asked: they
// judge a socket call, not the mail (syscall.Errno's says false for
// EPIPE, a connection lost mid-message).
func ClassOf(err error) Class {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	var pe *proto.Error
	var ce *proto.ConnectError
	var temporary interface{ Temporary() bool }
	switch {
	case errors.As(err, &pe):
		temporary = pe
	case errors.Is(err, proto.ErrNoServers):
		return BadConfig
	case errors.As(err, &ce):
		temporary = ce
	case errors.Is(err, proto.ErrRemoteViolation):
		temporary = proto.ErrRemoteViolation.(interface{ Temporary() bool })
	default:
		return Temporary // says nothing of itself
	}
	if temporary.Temporary() {
		return Temporary
	}
	return Permanent
}

// Scheme is a personality's exit statuses: one for each class, and
// finer ones for the errors it tells apart.
type Scheme struct {
	Name  string
	codes [numClasses]int
	// verdicts numbers a check's verdicts (Found); nil for a scheme
	// that is not a check's, which reads them by their class.
	verdicts *[numVerdicts]int
	// refine gives a finer status for err when the scheme has one.
	refine func(err error) (int, bool)
}

// under is an error whose status is read under its command's own scheme.
type under struct {
	s   *Scheme
	err error
}

func (u *under) Error() string { return u.err.Error() }
func (u *under) Unwrap() error { return u.err }

// Under names the scheme err's status is read under, whatever scheme
// Code is given: how a qbox command with a scheme of its own (probe,
// mx-check, queue check) names it. nil stays nil.
func Under(s *Scheme, err error) error {
	if err == nil {
		return nil
	}
	return &under{s: s, err: err}
}

// Found is a check's verdict v (probe, mx-check, queue check), already
// reported by the check's own output, as the error its command returns,
// numbered by the check's scheme s. VerdictOK is nil. An UNKNOWN is a
// temporary failure (the check could not run); WARNING and CRITICAL
// are Findings.
func Found(s *Scheme, v Verdict) error {
	if v == VerdictOK {
		return nil
	}
	c := Finding
	if v == VerdictUnknown {
		c = Temporary
	}
	return Under(s, &Error{Class: c, verdict: v})
}

// Code is err's exit status under s, or under the scheme err was given
// with Under. A verdict (Found) is numbered by the scheme's verdict
// statuses.
func Code(err error, s *Scheme) int {
	var u *under
	if errors.As(err, &u) {
		s = u.s
	}
	var e *Error
	if errors.As(err, &e) && e.verdict != VerdictOK && s.verdicts != nil {
		return s.verdicts[e.verdict]
	}
	if err != nil && s.refine != nil {
		if code, ok := s.refine(err); ok {
			return code
		}
	}
	return s.codes[ClassOf(err)]
}
