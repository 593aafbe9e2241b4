// Package bounce builds delivery status notifications (RFC 3464): the
// message that tells a sender their mail could not be delivered. It
// follows the chain qmail and serialmail use so bounces can never loop:
//
//   - a failed message from a sender goes back to that sender, from the
//     null sender;
//   - a failed message from the null sender (a bounce that bounced) goes
//     to the postmaster, from "#@[]" (a double bounce);
//   - a failed message from "#@[]" (a double bounce that bounced) is
//     discarded.
package bounce

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// DoubleBounceSender is the envelope sender of a double bounce. Mail from
// it that fails is thrown away.
const DoubleBounceSender = "#@[]"

// DefaultMaxOriginal bounds how much of the original message a bounce
// carries; a larger original is represented by its header only.
const DefaultMaxOriginal = 64 << 10

// maxHeader bounds the original header copied into a bounce.
const maxHeader = 64 << 10

// Config describes the reporting host.
type Config struct {
	// Hostname names this host in the text, From and Reporting-MTA;
	// empty means os.Hostname.
	Hostname string
	// Postmaster receives double bounces; empty means
	// "postmaster@"+Hostname.
	Postmaster string
	// Program names what is reporting, e.g. "qbox flush-maildir".
	Program string
	// MaxOriginal: the whole original is included up to this size,
	// otherwise its header only; 0 means DefaultMaxOriginal.
	MaxOriginal int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Failure is one recipient that could not be reached.
type Failure struct {
	Recipient string
	// RemoteMTA is the server that answered (empty if none did).
	RemoteMTA string
	// Diagnostic is the server's text (or why the message expired).
	Diagnostic string
	// TooOld marks a message that was retried until its lifetime ran
	// out, rather than one refused permanently.
	TooOld bool
	// DiagnosticType names the protocol of Diagnostic in the
	// Diagnostic-Code field; empty means "X-QMTP" (use "X-QMQP" for QMQP).
	DiagnosticType string
}

// Original is the message that failed.
type Original struct {
	Sender  string
	Arrival time.Time // when it was queued; zero if unknown
	// Message is the original message (header and body), Size bytes.
	Message io.Reader
	Size    int64
	// HeadersOnly sends the original's header only (text/rfc822-headers,
	// RFC 3462) whatever its size: the original was refused for its size,
	// and a bounce carrying it would be refused too.
	HeadersOnly bool
	// Note is said to the reader after the failures (a double bounce
	// says why the bounce itself failed).
	Note string
}

// SizeRefusal reports whether a server's refusal text says the message
// was too large: an enhanced status code 5.3.4 (message too big for the
// system) or 5.2.3 (message length exceeds the limit), or words to that
// effect.
func SizeRefusal(text string) bool {
	t := strings.ToLower(text)
	for _, w := range []string{"5.3.4", "5.2.3", "too big", "too large", "too long", "size limit", "message size", "exceeds"} {
		if strings.Contains(t, w) {
			return true
		}
	}
	return false
}

// Bounce is a finished notification, ready to inject.
type Bounce struct {
	Sender     string   // envelope sender: "" or DoubleBounceSender
	Recipients []string // envelope recipients: one address
	Message    []byte   // the whole message, LF line ends
}

// ErrDiscard means the original came from DoubleBounceSender: a failure
// about a failure notice is not reported to anyone.
var ErrDiscard = errors.New("bounce: a double bounce failed; discarded")

// Build makes the notification about failures of orig. It returns
// ErrDiscard for a triple bounce.
func Build(cfg Config, orig Original, failures []Failure) (*Bounce, error) {
	if len(failures) == 0 {
		return nil, errors.New("bounce: no failed recipients")
	}
	host := cfg.Hostname
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		host = h
	}
	host = headerSafe(host)
	program := cfg.Program
	if program == "" {
		program = "qbox"
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	maxOrig := cfg.MaxOriginal
	if maxOrig <= 0 {
		maxOrig = DefaultMaxOriginal
	}

	b := &Bounce{}
	switch orig.Sender {
	case DoubleBounceSender:
		return nil, ErrDiscard
	case "":
		b.Sender = DoubleBounceSender
		pm := cfg.Postmaster
		if pm == "" {
			pm = "postmaster@" + host
		}
		b.Recipients = []string{pm}
	default:
		b.Sender = ""
		b.Recipients = []string{orig.Sender}
	}

	var original []byte
	fullOriginal := orig.Size <= maxOrig && !orig.HeadersOnly
	if orig.Message != nil {
		var err error
		if fullOriginal {
			original, err = io.ReadAll(io.LimitReader(orig.Message, orig.Size))
		} else {
			original, err = readHeader(orig.Message)
		}
		if err != nil {
			return nil, fmt.Errorf("bounce: reading the original: %w", err)
		}
	}

	t := now()
	boundary := randomToken()
	var m bytes.Buffer
	fmt.Fprintf(&m, "From: MAILER-DAEMON@%s\n", host)
	fmt.Fprintf(&m, "To: %s\n", headerSafe(b.Recipients[0]))
	subject := "failure notice"
	if b.Sender == DoubleBounceSender {
		subject = "double bounce: failure notice"
	}
	fmt.Fprintf(&m, "Subject: %s\n", subject)
	fmt.Fprintf(&m, "Date: %s\n", t.Format(time.RFC1123Z))
	fmt.Fprintf(&m, "Message-ID: <%d.%s.bounce@%s>\n", t.Unix(), randomToken()[:12], host)
	m.WriteString("Auto-Submitted: auto-replied (failure)\n")
	m.WriteString("MIME-Version: 1.0\n")
	fmt.Fprintf(&m, "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"%s\"\n", boundary)
	m.WriteString("\nThis is a MIME-formatted delivery status notification.\n")

	// Part 1: for people.
	fmt.Fprintf(&m, "\n--%s\nContent-Type: text/plain; charset=us-ascii\n\n", boundary)
	fmt.Fprintf(&m, "Hi. This is the %s program at %s.\n", program, host)
	m.WriteString("I'm afraid I wasn't able to deliver your message to the following addresses.\n")
	m.WriteString("This is a permanent error; I've given up. Sorry it didn't work out.\n")
	for _, f := range failures {
		fmt.Fprintf(&m, "\n<%s>:\n", textSafe(f.Recipient))
		if f.TooOld {
			m.WriteString("This message is too old. Giving up.\n")
			if f.Diagnostic != "" {
				fmt.Fprintf(&m, "The last attempt said: %s\n", textSafe(f.Diagnostic))
			}
			continue
		}
		if f.RemoteMTA != "" {
			fmt.Fprintf(&m, "%s said: %s\n", textSafe(f.RemoteMTA), textSafe(f.Diagnostic))
		} else {
			fmt.Fprintf(&m, "%s\n", textSafe(f.Diagnostic))
		}
	}
	if !fullOriginal {
		fmt.Fprintf(&m, "\nThe original message was %d bytes; its header is attached.\n", orig.Size)
	}
	if orig.Note != "" {
		fmt.Fprintf(&m, "\n%s\n", textSafe(orig.Note))
	}

	// Part 2: for programs.
	fmt.Fprintf(&m, "\n--%s\nContent-Type: message/delivery-status\n\n", boundary)
	fmt.Fprintf(&m, "Reporting-MTA: dns; %s\n", host)
	if !orig.Arrival.IsZero() {
		fmt.Fprintf(&m, "Arrival-Date: %s\n", orig.Arrival.Format(time.RFC1123Z))
	}
	for _, f := range failures {
		m.WriteString("\n")
		fmt.Fprintf(&m, "Final-Recipient: rfc822; %s\n", headerSafe(f.Recipient))
		m.WriteString("Action: failed\n")
		fmt.Fprintf(&m, "Status: %s\n", statusCode(f))
		if f.RemoteMTA != "" {
			fmt.Fprintf(&m, "Remote-MTA: dns; %s\n", headerSafe(mtaName(f.RemoteMTA)))
		}
		if f.Diagnostic != "" {
			dt := f.DiagnosticType
			if dt == "" {
				dt = "X-QMTP"
			}
			fmt.Fprintf(&m, "Diagnostic-Code: %s; %s\n", headerSafe(dt), headerSafe(f.Diagnostic))
		}
		fmt.Fprintf(&m, "Last-Attempt-Date: %s\n", t.Format(time.RFC1123Z))
	}

	// Part 3: the original, or its header.
	if fullOriginal {
		fmt.Fprintf(&m, "\n--%s\nContent-Type: message/rfc822\n", boundary)
		if has8bit(original) {
			m.WriteString("Content-Transfer-Encoding: 8bit\n")
		}
	} else {
		fmt.Fprintf(&m, "\n--%s\nContent-Type: text/rfc822-headers\n", boundary)
		if has8bit(original) {
			m.WriteString("Content-Transfer-Encoding: 8bit\n")
		}
	}
	m.WriteString("\n")
	m.Write(original)
	if len(original) > 0 && original[len(original)-1] != '\n' {
		m.WriteString("\n")
	}
	fmt.Fprintf(&m, "\n--%s--\n", boundary)

	b.Message = m.Bytes()
	return b, nil
}

// hcmssc finds an enhanced status code in server text: "(#5.1.1)".
// Compiled on first use, not at start-up: every personality links this
// package and most never bounce.
var hcmssc = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`#([245])\.(\d{1,3})\.(\d{1,3})`)
})

func statusCode(f Failure) string {
	if f.TooOld {
		return "4.4.7" // delivery time expired
	}
	if m := hcmssc().FindStringSubmatch(f.Diagnostic); m != nil && m[1] == "5" {
		return m[1] + "." + m[2] + "." + m[3]
	}
	return "5.0.0"
}

// mtaName turns "host:port" or "name addr:port" into the host name the
// Remote-MTA field wants.
func mtaName(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		s = f[0]
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// readHeader reads the original's header, up to and including the blank
// line, at most maxHeader bytes.
func readHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeader))
	var out []byte
	for {
		line, err := br.ReadBytes('\n')
		out = append(out, line...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 1 { // the blank line ends the header
			return out, nil
		}
	}
}

// headerSafe makes a value safe inside a header field: no line breaks, no
// control bytes, printable ASCII only.
func headerSafe(s string) string {
	if len(s) > 2000 {
		s = s[:2000]
	}
	return strings.Map(func(r rune) rune {
		if r < 32 || r > 126 {
			return '?'
		}
		return r
	}, s)
}

// textSafe is the same for the human-readable part.
func textSafe(s string) string { return headerSafe(s) }

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func randomToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
