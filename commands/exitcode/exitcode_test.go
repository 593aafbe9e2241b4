package exitcode

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"qbox/proto"
	"qbox/proto/store/qmailqueue"
)

// One error, read under each personality's scheme, gives that
// personality's documented status.
func TestCodeUnderEachScheme(t *testing.T) {
	refused := &proto.ConnectError{Tried: []proto.ConnectAttempt{{Addr: "a:628", Err: syscall.ECONNREFUSED}}}
	timedOut := &proto.ConnectError{Tried: []proto.ConnectAttempt{{Addr: "a:628", Err: context.DeadlineExceeded}}}
	none := &proto.ConnectError{}
	d := proto.D("no such user").Err()
	z := proto.Z("try later").Err()
	cases := []struct {
		name string
		err  error
		want map[*Scheme]int
	}{
		{"success", nil, map[*Scheme]int{Qmail: 0, QmailQueue: 0, Sysexits: 0, Probe: 0, MXCheck: 0, Nagios: 0}},
		{"D", d, map[*Scheme]int{Qmail: 100, QmailQueue: 31, Sysexits: 69}},
		{"Z", z, map[*Scheme]int{Qmail: 111, QmailQueue: 71, Sysexits: 75}},
		{"refused", fmt.Errorf("sending: %w", refused), map[*Scheme]int{Qmail: 111, QmailQueue: 73, Sysexits: 75}},
		{"timed out", timedOut, map[*Scheme]int{Qmail: 111, QmailQueue: 72, Sysexits: 75}},
		{"no server configured", none, map[*Scheme]int{Qmail: 100, QmailQueue: 55, Sysexits: 78}},
		{"session", errors.New("connection reset"), map[*Scheme]int{Qmail: 111, QmailQueue: 74, Sysexits: 75, Nagios: 3}},
		{"usage", Usage("unknown flag --sever"), map[*Scheme]int{Qmail: 100, QmailQueue: 55, Sysexits: 64, Probe: 100, MXCheck: 100, Nagios: 3}},
		{"input", Input(errors.New("read error")), map[*Scheme]int{Qmail: 111, QmailQueue: 54, Sysexits: 74}},
		{"data", Data(errors.New("unparsable address")), map[*Scheme]int{Qmail: 100, QmailQueue: 31, Sysexits: 65}},
		{"envelope", &qmailqueue.EnvelopeError{Code: 91, Reason: "bad"}, map[*Scheme]int{QmailQueue: 91}},
	}
	for _, tc := range cases {
		if got := Code(tc.err, QmailRemote); got != 0 {
			t.Errorf("%s under qmail-remote: %d, want 0 (always)", tc.name, got)
		}
		for s, want := range tc.want {
			if got := Code(tc.err, s); got != want {
				t.Errorf("%s under %s: %d, want %d", tc.name, s.Name, got, want)
			}
		}
	}
}

// A command that names its scheme keeps it whatever scheme the caller
// reads the error under.
func TestUnder(t *testing.T) {
	if got := Code(Under(Probe, Usage("no HOST")), Sysexits); got != 100 {
		t.Errorf("probe's usage error read under sysexits: %d, want probe's 100", got)
	}
	if Under(Probe, nil) != nil || Reported(OK) != nil || Found(Nagios, VerdictOK) != nil {
		t.Error("no failure must stay nil")
	}
	if !Silent(Found(Nagios, VerdictWarning)) || Silent(Temp(errors.New("x"))) {
		t.Error("Silent")
	}
}

// Each check's scheme numbers the four verdicts once, whatever scheme
// qbox's main reads the error under; an UNKNOWN is a temporary failure
// and the others findings.
func TestVerdicts(t *testing.T) {
	want := map[*Scheme][numVerdicts]int{
		Nagios:  {0, 1, 2, 3},
		Probe:   {0, 1, 2, 111},
		MXCheck: {0, 1, 100, 111},
	}
	for s, codes := range want {
		for v := VerdictOK; v < numVerdicts; v++ {
			if got := Code(Found(s, v), Qmail); got != codes[v] {
				t.Errorf("%s under %s: %d, want %d", v, s.Name, got, codes[v])
			}
		}
	}
	classes := [numVerdicts]Class{OK, Finding, Finding, Temporary}
	for v := VerdictOK; v < numVerdicts; v++ {
		if got := ClassOf(Found(Nagios, v)); got != classes[v] {
			t.Errorf("class of %s: %s, want %s", v, got, classes[v])
		}
	}
	if max(VerdictWarning, VerdictUnknown, VerdictCritical) != VerdictUnknown || VerdictCritical.String() != "CRITICAL" {
		t.Error("order or words of the verdicts")
	}
}

// The protocol layer's errors say whether they are temporary (their
// Temporary method), so none of them reaches ClassOf's fallback: a
// violation wrapped by any client, a connect error with servers tried
// (temporary) or none (configuration), a reply. A socket error the
// standard library calls not temporary (EPIPE) is no verdict on the mail:
// it stays temporary.
func TestClassOfAsksTheProtocolErrors(t *testing.T) {
	violation := fmt.Errorf("qmtp: %w: a reply arrived before the package was sent in full", proto.ErrRemoteViolation)
	tried := &proto.ConnectError{Protocol: "smtp", Tried: []proto.ConnectAttempt{{Addr: "a:25", Err: syscall.ECONNREFUSED}}}
	cases := []struct {
		name      string
		err       error
		temporary bool // the error's own word
		want      Class
	}{
		{"violation", violation, true, Temporary},
		{"connect error", fmt.Errorf("flush: %w", tried), true, Temporary},
		{"no server to try", &proto.ConnectError{}, false, BadConfig},
		{"D", proto.D("no").Err(), false, Permanent},
		{"Z", proto.Z("later").Err(), true, Temporary},
	}
	for _, tc := range cases {
		var tmp interface{ Temporary() bool }
		if !errors.As(tc.err, &tmp) || tmp.Temporary() != tc.temporary {
			t.Errorf("%s: Temporary() is not %v", tc.name, tc.temporary)
		}
		if got := ClassOf(tc.err); got != tc.want {
			t.Errorf("%s: class %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := ClassOf(fmt.Errorf("write: %w", syscall.EPIPE)); got != Temporary {
		t.Errorf("EPIPE: class %v, want temporary (syscall.Errno.Temporary is not asked)", got)
	}
}
