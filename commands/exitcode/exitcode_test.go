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
		{"usage", Usage("unknown flag --sever"), map[*Scheme]int{Qmail: 100, QmailQueue: 55, Sysexits: 64, Probe: 100, MXCheck: 100, Nagios: 100}},
		{"input", Input(errors.New("read error")), map[*Scheme]int{Qmail: 111, QmailQueue: 54, Sysexits: 74}},
		{"data", Data(errors.New("unparsable address")), map[*Scheme]int{Qmail: 100, QmailQueue: 31, Sysexits: 65}},
		{"envelope", &qmailqueue.EnvelopeError{Code: 91, Reason: "bad"}, map[*Scheme]int{QmailQueue: 91}},
		{"warning", Reported(Warning), map[*Scheme]int{Probe: 1, MXCheck: 1, Nagios: 1}},
		{"critical", Reported(Critical), map[*Scheme]int{Probe: 2, Nagios: 2}},
		{"not found", Reported(Permanent), map[*Scheme]int{MXCheck: 100}},
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
	if got := Code(Under(Probe, Reported(Critical)), Qmail); got != 2 {
		t.Errorf("probe's critical read by qbox's main: %d, want 2", got)
	}
	if Under(Probe, nil) != nil || Reported(OK) != nil {
		t.Error("no failure must stay nil")
	}
	if !Silent(Under(Nagios, Reported(Warning))) || Silent(Temp(errors.New("x"))) {
		t.Error("Silent")
	}
}
