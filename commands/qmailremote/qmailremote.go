// Package qmailremote is the qmail-remote personality: qmail-rspawn runs
// it (as $QMAILREMOTE, or as bin/qmail-remote) with `host sender
// recip...` and the message on fd 0, and reads its reports on fd 1. It
// routes as qmail-remote does (control/smtproutes, the MX lookup, "[ip]")
// plus QMTP: control/qmtproutes, and MXPS's QMTP exchangers, tried over
// QMTP on 209 first and over SMTP on 25 only when that connect fails.
//
// The reports are qmail-remote's, byte for byte in their form: one per
// recipient in argument order ('r' accepted, 'h' permanent, 's'
// temporary), then one for the message ('K', 'Z' or 'D'), each a letter,
// a human-readable text and a 0 byte; the exit status is always 0. As in
// qmail-remote, a failure before the recipients were answered (no
// connection, a refused sender) gives fewer recipient reports, or none.
package qmailremote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/mxps"
	"qbox/proto/qmail/control"
	"qbox/proto/qmtp"
	"qbox/proto/queue"
	"qbox/proto/smtp"
)

// Environment variables beyond qmail-remote's interface, for tests and
// sites that run their exchangers' services elsewhere: the DNS server to
// ask instead of the system resolver (host:port), and the ports MXPS's
// QMTP and SMTP attempts use instead of 209 and 25. Routes carry their
// own ports.
const (
	EnvResolver = "QBOX_RESOLVER"
	EnvQMTPPort = "QBOX_QMTP_PORT"
	EnvSMTPPort = "QBOX_SMTP_PORT"
)

// qmail-remote's defaults for control/timeoutconnect and
// control/timeoutremote, in seconds.
const (
	DefaultTimeoutConnect = 60
	DefaultTimeoutRemote  = 1200
)

// Report is one of qmail-remote's reports: a letter ('r', 'h', 's' for a
// recipient; 'K', 'Z', 'D' for the message) and its text.
type Report struct {
	Letter byte
	Text   string
}

// Bytes is the report as qmail-rspawn reads it: letter, text, 0 byte. A 0
// byte in the text would end the report early, so none is left in it.
func (r Report) Bytes() []byte {
	b := make([]byte, 0, len(r.Text)+2)
	b = append(b, r.Letter)
	b = append(b, strings.ReplaceAll(r.Text, "\x00", "?")...)
	return append(b, 0)
}

// Message is the message to send: Size bytes, which Open returns afresh
// each time it is called (the SMTP client reads it twice).
type Message struct {
	Size int64
	Open func() (io.ReadCloser, error)
}

// Config is what qmail-remote reads besides its arguments.
type Config struct {
	// Getenv is the environment (os.Getenv); it gives $QMAILHOME and the
	// Env* overrides.
	Getenv func(string) string
	// Getwd is the working directory (nil: os.Getwd); <home>/queue/mess
	// names qmail's home when $QMAILHOME is unset (control.SpawnedHome).
	Getwd func() (string, error)
	// Resolver answers DNS questions; nil: $QBOX_RESOLVER's server, else
	// the system resolver.
	Resolver mxps.Resolver
	// Dial makes connections; nil: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Rand orders equal MX preferences; nil: the process's source.
	Rand *rand.Rand
}

// Controls are the control files qmail-remote reads.
type Controls struct {
	Helo           string // control/helohost, else control/me, else the host name
	TimeoutConnect time.Duration
	TimeoutRemote  time.Duration
	SMTPRoutes     mxps.Routes
	QMTPRoutes     mxps.Routes
}

// ReadControls reads the control files under home/control as
// qmail-remote does: a missing file is its default, an unreadable one an
// error (qmail-remote's "Unable to read control files"). The directory
// itself must be there: without it every route would be missed and the
// mail bounced by a DNS lookup that should never have been made.
func ReadControls(home string) (Controls, error) {
	ctl := filepath.Join(home, "control")
	c := Controls{}
	st, err := os.Stat(ctl)
	if err != nil {
		return c, err
	}
	if !st.IsDir() {
		return c, fmt.Errorf("%s is not a directory", ctl)
	}
	if c.Helo, err = control.HeloFrom(ctl); err != nil {
		return c, err
	}
	if c.TimeoutConnect, err = readSeconds(filepath.Join(ctl, "timeoutconnect"), DefaultTimeoutConnect); err != nil {
		return c, err
	}
	if c.TimeoutRemote, err = readSeconds(filepath.Join(ctl, "timeoutremote"), DefaultTimeoutRemote); err != nil {
		return c, err
	}
	if c.SMTPRoutes, err = readRoutes(filepath.Join(ctl, "smtproutes")); err != nil {
		return c, err
	}
	if c.QMTPRoutes, err = readRoutes(filepath.Join(ctl, "qmtproutes")); err != nil {
		return c, err
	}
	return c, nil
}

// controlFailure is the report for control files that cannot be read: a
// deferral, with where the home came from and how to point qbox at the
// right one, so the mail stays queued while the admin fixes it.
func controlFailure(home string, where control.Where, err error) Report {
	var fix string
	switch where {
	case control.FromEnv:
		fix = "correct $QMAILHOME in qmail-send's environment, or unset it so that qmail-rspawn's working directory <home>/" + control.SpawnDir + " names the home"
	case control.FromWorkDir:
		fix = "create it, or make it and its files readable by qmail's remote user (qmailr)"
	default:
		fix = "run qbox as qmail-remote from qmail-rspawn (working directory <home>/" + control.SpawnDir + ") or set $QMAILHOME in qmail-send's environment"
	}
	return Report{'Z', textControl + detail(fmt.Errorf("qbox: %w; qmail's home %s is %v; %s", err, home, where, fix))}
}

// readSeconds reads a control file holding a number of seconds as
// qmail's control_readint does: missing, or not starting with digits,
// is the default. Zero would make every wait expire at once, so it is the
// default too.
func readSeconds(path string, def int) (time.Duration, error) {
	b, err := readSmall(path, 256)
	if err != nil || b == nil {
		return time.Duration(def) * time.Second, err
	}
	s := strings.TrimLeft(string(b), " \t")
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	v, perr := strconv.Atoi(s[:n])
	if perr != nil || v <= 0 || v > 1<<20 {
		v = def
	}
	return time.Duration(v) * time.Second, nil
}

func readRoutes(path string) (mxps.Routes, error) {
	b, err := readSmall(path, mxps.MaxRoutesFile)
	if err != nil {
		return mxps.Routes{}, err
	}
	return mxps.ParseRoutes(b)
}

// readSmall reads a control file of at most max bytes; missing is nil.
func readSmall(path string, max int64) ([]byte, error) {
	b, err := control.Read(path, max)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

// ports reads the Env* port overrides.
func ports(getenv func(string) string) (mxps.Ports, error) {
	var p mxps.Ports
	for _, v := range []struct {
		name string
		dst  *string
	}{{EnvQMTPPort, &p.QMTP}, {EnvSMTPPort, &p.SMTP}} {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return p, fmt.Errorf("$%s=%q is not a TCP port", v.name, proto.Printable(s, 40))
		}
		*v.dst = strconv.FormatUint(n, 10)
	}
	return p, nil
}

// Texts of qmail-remote's reports, kept word for word: qmail's bounces
// and logs quote them, and people search for them.
const (
	textNoConn      = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
	textControl     = "Unable to read control files. (#4.3.0)\n"
	textRead        = "Unable to read message. (#4.3.0)\n"
	textTempDNS     = "Sorry, I couldn't find any host by that name. (#4.1.2)\n"
	textNoMX        = "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
	textUsage       = "I (qmail-remote) was invoked improperly. (#5.3.5)\n"
	textSenderBytes = "Sender address contains CR, LF or NUL; I refuse to send it. (#5.1.7)\n"
	textRcptBytes   = "Recipient address is empty or contains CR, LF or NUL; I refuse to send it. (#5.1.3)\n"
	textNoRcpt      = "None of the recipients could be sent to. (#5.1.3)\n"
)

// Deliver is qmail-remote: it sends msg from sender to recipients at
// host and returns the reports to print, recipient reports first (in
// argument order, possibly fewer than the recipients), then the message
// report, always last and always there.
func Deliver(ctx context.Context, cfg Config, host, sender string, recipients []string, msg Message) []Report {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := proto.CheckSender(sender); err != nil {
		return []Report{{'D', textSenderBytes}}
	}
	if host == "" || strings.ContainsAny(host, "\r\n\x00 \t/") {
		return []Report{{'D', textUsage}}
	}
	getwd := cfg.Getwd
	if getwd == nil {
		getwd = os.Getwd
	}
	home, where := control.SpawnedHome(getenv, getwd)
	ctl, err := ReadControls(home)
	if err != nil {
		return []Report{controlFailure(home, where, err)}
	}
	pp, err := ports(getenv)
	if err != nil {
		return []Report{{'Z', textControl + detail(err)}}
	}

	// A recipient that fails the address check gets its 'h' here; the
	// others go into the one package.
	byArg := make([]*Report, len(recipients))
	var sendable []string
	var argOf []int
	for i, r := range recipients {
		if proto.CheckRecipient(r) != nil {
			byArg[i] = &Report{'h', textRcptBytes}
			continue
		}
		sendable = append(sendable, r)
		argOf = append(argOf, i)
	}
	if len(sendable) == 0 {
		return finish(byArg, Report{'D', textNoRcpt})
	}

	res := cfg.Resolver
	if res == nil {
		if s := getenv(EnvResolver); s != "" {
			res = mxps.Server(s, 0)
		} else {
			res = mxps.System()
		}
	}
	plan, err := mxps.PlanDelivery(ctx, res, host, ctl.QMTPRoutes, ctl.SMTPRoutes, pp, cfg.Rand)
	if err != nil {
		return finish(byArg, planFailure(plan.Host, err))
	}

	pkg := proto.Message{Sender: sender, Recipients: sendable, Size: msg.Size, Open: msg.Open}
	t := &queue.MXPS{
		Attempts: plan.Attempts,
		Dialer:   mxps.Dialer{ConnectTimeout: ctl.TimeoutConnect, Ports: pp, Dial: cfg.Dial},
		QMTP:     qmtp.Client{ConnectTimeout: ctl.TimeoutConnect, ReadTimeout: ctl.TimeoutRemote, WriteTimeout: ctl.TimeoutRemote, Dial: cfg.Dial},
		SMTP: &smtp.Client{ConnectTimeout: ctl.TimeoutConnect, CommandTimeout: ctl.TimeoutRemote, DataTimeout: ctl.TimeoutRemote,
			Helo: ctl.Helo, Dial: cfg.Dial},
	}
	results := make([]*proto.Result, len(sendable))
	_, err = t.Deliver(ctx, []proto.Message{pkg}, func(r proto.Result) {
		if r.Message == 0 && r.Recipient >= 0 && r.Recipient < len(results) {
			rr := r
			results[r.Recipient] = &rr
		}
	})
	var ue *queue.UnreachableError
	if errors.As(err, &ue) {
		return finish(byArg, Report{'Z', textNoConn + detail(ue.Err)})
	}
	var first *proto.Result
	for _, r := range results {
		if r != nil {
			first = r
			break
		}
	}
	var rep sessionReport
	switch {
	case first == nil:
		// The session ended before any recipient had a result.
		return finish(byArg, Report{'Z', "Sorry, the session ended before any reply. (#4.4.2)\n" + detail(err)})
	case first.Protocol == "QMTP":
		rep = qmtpReports(results)
	default:
		rep = smtpReports(results)
	}
	for k, r := range rep.recipients {
		if r != nil {
			byArg[argOf[k]] = r
		}
	}
	return finish(byArg, rep.message)
}

// detail is a line of qbox's own account of a failure, after qmail's
// words.
func detail(err error) string {
	if err == nil {
		return ""
	}
	return proto.OneLine(err.Error()) + "\n"
}

// planFailure is the report for a host that could not be routed.
func planFailure(host string, err error) Report {
	var de *mxps.DNSError
	var re *mxps.RouteError
	switch {
	case errors.As(err, &de) && de.NotFound:
		return Report{'D', "Sorry, I couldn't find any host named " + safeHost(host) + ". (#5.1.2)\n"}
	case errors.As(err, &de):
		return Report{'Z', textTempDNS + detail(err)}
	case errors.Is(err, mxps.ErrNullMX):
		return Report{'D', textNoMX + detail(err)}
	case errors.As(err, &re):
		return Report{'Z', textControl + detail(err)}
	}
	return Report{'Z', textTempDNS + detail(err)}
}

// safeHost is qmail-remote's outsafe: bytes outside 33–126 become '?'.
func safeHost(s string) string {
	b := []byte(proto.Printable(s, 255))
	for i, c := range b {
		if c == ' ' {
			b[i] = '?'
		}
	}
	return string(b)
}

// finish lays the reports out as qmail-remote prints them: recipient
// reports in argument order up to the first recipient without one, then
// the message report.
func finish(byArg []*Report, msg Report) []Report {
	var out []Report
	for _, r := range byArg {
		if r == nil {
			break
		}
		out = append(out, *r)
	}
	return append(out, msg)
}

type sessionReport struct {
	recipients []*Report // per sendable recipient; nil: no report
	message    Report
}

// partner is the address of the server a result names ("host addr").
func partner(r *proto.Result) string {
	s := r.Server
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		s = s[i+1:]
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// sessionPartner is the IP address of the server a session's results came
// from (every result of one session names the same one).
func sessionPartner(results []*proto.Result) string {
	for _, r := range results {
		if r != nil {
			return partner(r)
		}
	}
	return ""
}

func said(text string) string {
	if text == "" {
		return ""
	}
	return "Remote host said: " + proto.OneLine(text) + "\n"
}

// letter maps a reply to a recipient letter, or to a message letter.
func recipientLetter(s proto.Status) byte {
	if s == proto.Permanent {
		return 'h'
	}
	return 's'
}

func messageLetter(s proto.Status) byte {
	switch s {
	case proto.OK:
		return 'K'
	case proto.Permanent:
		return 'D'
	}
	return 'Z'
}

func died(ip string, duplicate bool, cause string) string {
	s := "Connected to " + ip + " but connection died. "
	if duplicate {
		s += "Possible duplicate! "
	}
	s += "(#4.4.2)\n"
	if cause != "" {
		s += proto.OneLine(cause) + "\n"
	}
	return s
}

// smtpReports reports an SMTP session as qmail-remote does: the
// greeting, HELO or MAIL refused is the message report alone; each RCPT
// reply is a recipient report; DATA's reply, or the reply to the message,
// is the message report; a session lost is "connection died", after the
// reports of the recipients answered before.
func smtpReports(results []*proto.Result) sessionReport {
	rep := sessionReport{recipients: make([]*Report, len(results))}
	ip := sessionPartner(results)
	// Session-wide refusals first: they come before any recipient.
	for _, r := range results {
		if r == nil || !r.FromServer {
			continue
		}
		switch r.Stage {
		case proto.StageGreeting:
			rep.message = Report{'Z', "Connected to " + ip + " but greeting failed.\n" + said(r.Reply.Text)}
			return rep
		case proto.StageHello:
			rep.message = Report{'Z', "Connected to " + ip + " but my name was rejected.\n" + said(r.Reply.Text)}
			return rep
		case proto.StageMail:
			rep.message = Report{messageLetter(r.Reply.Status), "Connected to " + ip + " but sender was rejected.\n" + said(r.Reply.Text)}
			return rep
		}
	}
	var data, final, lost *proto.Result
	accepted := false
	for k, r := range results {
		switch {
		case r == nil:
		case r.FromServer && r.Stage == proto.StageRcpt:
			rep.recipients[k] = &Report{recipientLetter(r.Reply.Status), ip + " does not like recipient.\n" + said(r.Reply.Text)}
			continue
		case r.RcptAccepted:
			rep.recipients[k] = &Report{'r', ""}
			accepted = true
		}
		if r == nil {
			continue
		}
		switch {
		case r.FromServer && r.Stage == proto.StageData && data == nil:
			data = r
		case r.FromServer && r.Stage == proto.StageMessage && final == nil:
			final = r
		case !r.FromServer && lost == nil:
			lost = r
		}
	}
	switch {
	case lost != nil && lost.Reply.Status == proto.Permanent:
		// Refused here before sending (over the server's SIZE).
		rep.message = Report{'D', proto.OneLine(lost.Reply.Text) + "\n"}
	case lost != nil && strings.HasPrefix(lost.Reply.Text, "cannot read message"):
		rep.message = Report{'Z', textRead + proto.OneLine(lost.Reply.Text) + "\n"}
	case lost != nil:
		rep.message = Report{'Z', died(ip, lost.Sent, lost.Reply.Text)}
	case data != nil:
		rep.message = Report{messageLetter(data.Reply.Status), ip + " failed on DATA command.\n" + said(data.Reply.Text)}
		if data.Reply.Status == proto.OK {
			rep.message.Letter = 'Z'
		}
	case final != nil && final.Reply.Status == proto.OK:
		rep.message = Report{'K', ip + " accepted message.\n" + said(final.Reply.Text)}
	case final != nil:
		rep.message = Report{messageLetter(final.Reply.Status), ip + " failed after I sent the message.\n" + said(final.Reply.Text)}
	case !accepted:
		rep.message = Report{'D', "Giving up on " + ip + ".\n"}
	default:
		rep.message = Report{'Z', died(ip, false, "")}
	}
	return rep
}

// qmtpReports reports a QMTP session as the qmtpc patch does: the package
// carried every recipient and each got its own reply, 'r' for K, 'h' for
// D, 's' for Z; the message report is K when any recipient was accepted
// (qmail-rspawn then gives each 'r' recipient K and the others their own
// letter), else Z when replies were lost, else D.
//
// A session that dies or times out before every reply came is reported as
// qmail-remote reports an SMTP session that dies: the recipients answered
// so far, then the message report "Connected to ... but connection
// died." and nothing for the recipients left unanswered (an 's' with the
// same sentence would make qmail-rspawn print it twice). Only when a
// recipient was accepted before the loss, so the message report is K, do
// the unanswered ones get their 's': a K must not cover them.
func qmtpReports(results []*proto.Result) sessionReport {
	rep := sessionReport{recipients: make([]*Report, len(results))}
	ip := sessionPartner(results)
	var firstK *proto.Result
	lost, cause := -1, ""
	for k, r := range results {
		switch {
		case r == nil || !r.FromServer:
			if lost < 0 {
				lost = k
				if r != nil {
					cause = r.Reply.Text
				}
			}
		case r.Reply.Status == proto.OK:
			rep.recipients[k] = &Report{'r', ""}
			if firstK == nil {
				firstK = r
			}
		default:
			rep.recipients[k] = &Report{recipientLetter(r.Reply.Status), ip + " does not like recipient.\n" + said(r.Reply.Text)}
		}
	}
	switch {
	case firstK != nil:
		for k, r := range results {
			if r == nil || !r.FromServer {
				rep.recipients[k] = &Report{'s', died(ip, false, cause)}
			}
		}
		rep.message = Report{'K', ip + " accepted message over QMTP.\n" + said(firstK.Reply.Text)}
	case lost >= 0:
		for k := lost; k < len(results); k++ {
			rep.recipients[k] = nil // the report stops at the first unanswered recipient
		}
		rep.message = Report{'Z', died(ip, false, cause)}
	default:
		rep.message = Report{'D', "Giving up on " + ip + ".\n"}
	}
	return rep
}
