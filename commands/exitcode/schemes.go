package exitcode

import (
	"errors"

	"qbox/proto"
	"qbox/proto/store/qmailqueue"
)

// The schemes. A class a scheme cannot meet (a finding for qmail-inject)
// still has a status, the nearest one. The checks' schemes (probe,
// mx-check, Nagios) number their verdicts, in the order OK, WARNING,
// CRITICAL, UNKNOWN.
var (
	// Qmail is qmail's 0/100/111, for qbox's commands, qmail-inject,
	// maildirqmtp and maildirsmtp: a bad command line or configuration
	// is permanent (retrying a typo cannot help).
	Qmail = &Scheme{Name: "qmail", codes: [numClasses]int{
		OK: 0, Temporary: 111, Permanent: 100, BadUsage: 100, BadConfig: 100, Finding: 111}}

	// QmailQueue is the qmail-queue interface's (qmail-qmqpc): 31 a D, 71
	// a Z, 72 and 73 the last connection timed out or failed otherwise,
	// 74 the session failed after connecting (and any other temporary
	// failure), 91 or 11 a bad envelope, 54 a read error, 55 no usable
	// server configured.
	QmailQueue = &Scheme{Name: "qmail-queue", codes: [numClasses]int{
		OK:        qmailqueue.ExitOK,
		Temporary: qmailqueue.ExitSession,
		Permanent: qmailqueue.ExitRejected,
		BadUsage:  qmailqueue.ExitConfig,
		BadConfig: qmailqueue.ExitConfig,
		Finding:   qmailqueue.ExitSession,
	}, refine: qmailQueueRefine}

	// Sysexits is sendmail's (sysexits.h, as sendmail, msmtp and dma use
	// them): 64 usage, 65 a refused message or address, 69 permanently
	// rejected, 74 reading the message failed, 75 not sent and not even
	// spooled, 78 configuration.
	Sysexits = &Scheme{Name: "sysexits", codes: [numClasses]int{
		OK: 0, Temporary: 75, Permanent: 69, BadUsage: 64, BadConfig: 78, Finding: 75},
		refine: sysexitsRefine}

	// QmailRemote is qmail-remote's: 0 always, whatever happened (the
	// reports on fd 1 say it; qmail-rspawn takes any other status for a
	// crash of the program).
	QmailRemote = &Scheme{Name: "qmail-remote"}

	// Probe is qbox probe's, for monitoring: 0 the expected protocol, 1
	// something else answered (WARNING), 2 closed, filtered or
	// unreachable (CRITICAL); 100 a bad command line.
	Probe = &Scheme{Name: "probe", codes: [numClasses]int{
		OK: 0, Finding: 2, Temporary: 111, Permanent: 100, BadUsage: 100, BadConfig: 100},
		verdicts: &[numVerdicts]int{VerdictOK: 0, VerdictWarning: 1, VerdictCritical: 2, VerdictUnknown: 111}}

	// MXCheck is qbox mx-check's: 0 a QMTP exchanger (OK), 1 none
	// (WARNING), 100 the domain does not exist (CRITICAL), 111 DNS could
	// not answer now (UNKNOWN).
	MXCheck = &Scheme{Name: "mx-check", codes: [numClasses]int{
		OK: 0, Finding: 1, Temporary: 111, Permanent: 100, BadUsage: 100, BadConfig: 100},
		verdicts: &[numVerdicts]int{VerdictOK: 0, VerdictWarning: 1, VerdictCritical: 100, VerdictUnknown: 111}}

	// Nagios is a monitoring plugin's (qbox queue check): 0 OK, 1
	// WARNING, 2 CRITICAL, 3 UNKNOWN (the check could not run, a bad
	// command line included, as the plugin guidelines want).
	Nagios = &Scheme{Name: "nagios", codes: [numClasses]int{
		OK: 0, Finding: 2, Temporary: 3, Permanent: 3, BadConfig: 3, BadUsage: 3},
		verdicts: &[numVerdicts]int{VerdictOK: 0, VerdictWarning: 1, VerdictCritical: 2, VerdictUnknown: 3}}
)

func qmailQueueRefine(err error) (int, bool) {
	var ee *qmailqueue.EnvelopeError
	if errors.As(err, &ee) {
		return ee.Code, true
	}
	if errors.Is(err, ErrInput) {
		return qmailqueue.ExitReadError, true
	}
	var pe *proto.Error
	if errors.As(err, &pe) && pe.Temporary() {
		return qmailqueue.ExitTempRejected, true
	}
	var ce *proto.ConnectError
	if errors.As(err, &ce) && len(ce.Tried) > 0 {
		if ce.TimedOut() {
			return qmailqueue.ExitConnectTimeout, true
		}
		return qmailqueue.ExitConnectRefused, true
	}
	return 0, false
}

func sysexitsRefine(err error) (int, bool) {
	switch {
	case errors.Is(err, ErrData):
		return 65, true
	case errors.Is(err, ErrInput):
		return 74, true
	}
	return 0, false
}
