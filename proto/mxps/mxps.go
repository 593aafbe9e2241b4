// Package mxps implements D. J. Bernstein's Mail eXchanger Protocol
// Switch (cr.yp.to/proto/mxps.txt, revised in cr.yp.to/im/mxps.html): an
// MX preference in 12800–13055 names, by its value mod 16, the protocol
// the exchanger speaks besides SMTP; slice #1 (12801+16k) is QMTP.
//
// The package classifies preferences, orders exchangers as RFC 5321 says
// (by preference, random among equals), states MXPS's delivery rule (QMTP
// on 209 first; SMTP on 25 only when that connect fails, never once a QMTP
// session has started), and looks a domain's exchangers up through the
// system resolver or directly at a given DNS server.
package mxps

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Ports of the protocols MXPS switches between.
const (
	QMTPPort = "209"
	SMTPPort = "25"
)

// The experimental range MXPS takes from MX preferences, and its slices.
const (
	FirstExperimental = 12800
	LastExperimental  = 13055
	MaxSMTP           = 10000 // SMTP owns 0–10000
	SliceSMTP         = 0     // 12800+16k: SMTP
	SliceQMTP         = 1     // 12801+16k: QMTP (and SMTP)
)

// Class is what an MX preference says about its exchanger.
type Class int

const (
	// SMTP is an ordinary preference, 0–10000.
	SMTP Class = iota
	// MXPSSMTP is slice #0 of the experimental range: SMTP.
	MXPSSMTP
	// QMTP is slice #1 (12801+16k, k = 0…15): QMTP on 209, and SMTP on 25.
	QMTP
	// Unassigned is 10001–12799, 13056–65535 and slices #2–#15. MX
	// records must never use these; a sender may treat them as SMTP.
	Unassigned
)

var classNames = [...]string{SMTP: "smtp", MXPSSMTP: "mxps-smtp", QMTP: "qmtp", Unassigned: "unassigned"}

// String names the class as mx-check prints it: smtp, mxps-smtp, qmtp or
// unassigned.
func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// MarshalText makes a Class a JSON string.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a Class from its name, for JSON consumers.
func (c *Class) UnmarshalText(b []byte) error {
	for i, n := range classNames {
		if n == string(b) {
			*c = Class(i)
			return nil
		}
	}
	return fmt.Errorf("mxps: unknown class %q", b)
}

// Classify says what preference pref means under MXPS.
func Classify(pref uint16) Class {
	switch {
	case pref <= MaxSMTP:
		return SMTP
	case pref < FirstExperimental || pref > LastExperimental:
		return Unassigned
	}
	switch pref % 16 {
	case SliceSMTP:
		return MXPSSMTP
	case SliceQMTP:
		return QMTP
	}
	return Unassigned
}

// Slice returns pref's MXPS slice number (pref mod 16) and true when pref
// is in the experimental range 12800–13055, else 0 and false.
func Slice(pref uint16) (int, bool) {
	if pref < FirstExperimental || pref > LastExperimental {
		return 0, false
	}
	return int(pref % 16), true
}

// IsQMTP reports whether pref is in MXPS's QMTP slice (12800 ≤ pref ≤
// 13055 and pref mod 16 = 1), as Russell Nelson's qmtpc patch tests it.
func IsQMTP(pref uint16) bool { return Classify(pref) == QMTP }

// MX is one MX record: a preference and an exchanger host name (without
// the trailing dot; "." alone is RFC 7505's null MX).
type MX struct {
	Pref uint16 `json:"preference"`
	Host string `json:"host"`
}

// IsNull reports whether the record is RFC 7505's null MX: preference 0
// and the root as exchanger.
func (m MX) IsNull() bool { return m.Pref == 0 && (m.Host == "." || m.Host == "") }

// Order returns the records in the order RFC 5321 §5.1 has a sender try
// them: by ascending preference, randomly among equal preferences. rnd
// chooses the random order (tests pass a seeded one); nil means the
// process's random source. The input is not modified.
func Order(mxs []MX, rnd *rand.Rand) []MX {
	out := slices.Clone(mxs)
	shuffle := rand.Shuffle
	if rnd != nil {
		shuffle = rnd.Shuffle
	}
	// Shuffle first, then a stable sort by preference: equal preferences
	// keep their random relative order.
	shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return out
}

// Protocol is what one delivery attempt speaks.
type Protocol string

const (
	ProtoQMTP Protocol = "QMTP"
	ProtoSMTP Protocol = "SMTP"
)

// Attempt is one connection a sender may make: a protocol to a
// host:port.
type Attempt struct {
	Protocol Protocol
	Addr     string // host:port, IPv6 in brackets
	Host     string // the exchanger's name, for messages
	Pref     uint16
	// TLS: the connection is TLS from the first byte, the certificate
	// verified for Host (QMTPS, asked for by a qmtproutes entry).
	TLS bool
}

// Ports overrides the well-known ports (non-standard setups and tests).
// Empty fields mean 209 and 25.
type Ports struct {
	QMTP string
	SMTP string
}

func (p Ports) qmtp() string { return cmp.Or(p.QMTP, QMTPPort) }
func (p Ports) smtp() string { return cmp.Or(p.SMTP, SMTPPort) }

// Attempts states MXPS's delivery rule for one address of one exchanger
// as the list of connections to try, in order. For a QMTP exchanger: QMTP
// on 209, then SMTP on 25 of the same address; for any other preference
// (an unassigned one counts as SMTP): SMTP on 25. The second attempt is
// only for when the first one's connect fails: once a connection is
// established its session decides, see Deliver.
func Attempts(pref uint16, host, addr string, ports Ports) []Attempt {
	smtp := Attempt{Protocol: ProtoSMTP, Addr: joinHostPort(addr, ports.smtp()), Host: host, Pref: pref}
	if !IsQMTP(pref) {
		return []Attempt{smtp}
	}
	qmtp := Attempt{Protocol: ProtoQMTP, Addr: joinHostPort(addr, ports.qmtp()), Host: host, Pref: pref}
	return []Attempt{qmtp, smtp}
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}
