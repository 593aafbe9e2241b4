package message

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"qbox/proto/qmail/control"
)

// Config is qmail-inject's environment and control files, resolved once.
// Build it with ConfigFromEnv or fill it in directly (tests, callers that
// override a field such as sendmail's -F).
type Config struct {
	User string // From's local part: QMAILUSER > MAILUSER > USER > LOGNAME > "anonymous"
	Host string // From's host: QMAILHOST > MAILHOST; empty means DefaultHost
	Name string // full name: QMAILNAME > MAILNAME > NAME; empty means none

	// The default envelope sender: QMAILSUSER and QMAILSHOST, each
	// falling back to User and Host.
	SenderUser string
	SenderHost string

	DefaultHost   string // control/defaulthost (else me), QMAILDEFAULTHOST: added to a bare box
	DefaultDomain string // control/defaultdomain (else me), QMAILDEFAULTDOMAIN: added to a dotless host
	PlusDomain    string // control/plusdomain (else me), QMAILPLUSDOMAIN: replaces a host's trailing '+'
	IDHost        string // control/idhost (else me), QMAILIDHOST: Message-ID's host

	Flags Flags // QMAILINJECT letters

	// MaxHeader bounds the header held in memory; 0 means DefaultMaxHeader.
	MaxHeader int

	// Determinism hooks for tests; nil/0 means the real clock, process id
	// and a process-wide counter.
	Now   func() time.Time
	PID   int
	Count func() uint64
}

// Flags are the letters of $QMAILINJECT.
type Flags struct {
	CommentFrom      bool // c: From: user@host (Full Name)
	IgnoreReturnPath bool // s: delete an incoming Return-Path without using it
	DeleteFrom       bool // f: delete an incoming From
	DeleteMessageID  bool // i: delete an incoming Message-ID
	VERPRecipient    bool // r: per-recipient VERP (sender gets "-@[]")
	VERPMessage      bool // m: per-message VERP (sender gets "-<time>.<pid>")
}

// ParseFlags reads $QMAILINJECT; unknown letters are ignored, as qmail does.
func ParseFlags(s string) Flags {
	var f Flags
	for _, c := range s {
		switch c {
		case 'c':
			f.CommentFrom = true
		case 's':
			f.IgnoreReturnPath = true
		case 'f':
			f.DeleteFrom = true
		case 'i':
			f.DeleteMessageID = true
		case 'r':
			f.VERPRecipient = true
		case 'm':
			f.VERPMessage = true
		}
	}
	return f
}

// ConfigFromEnv resolves the configuration as qmail-inject does, from the
// environment (getenv, usually os.Getenv) and the control files under
// $QMAILHOME/control. Missing control files are not an error: the
// fallback is control/me, then this machine's host name (qmail falls back
// to the literal words "defaulthost", "idhost"...; on a host without qmail
// a From or Message-ID should name the host, not a placeholder). Unlike
// C's getenv, an empty variable counts as unset.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	first := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	ctl := filepath.Join(control.Home(getenv), "control")
	me, err := control.FirstLine(filepath.Join(ctl, "me"))
	if err != nil {
		return Config{}, err
	}
	control := func(file, env, fallback string) (string, error) {
		if v := getenv(env); v != "" {
			return v, nil
		}
		v, err := control.FirstLine(filepath.Join(ctl, file))
		if err != nil {
			return "", err
		}
		switch {
		case v != "":
			return v, nil
		case me != "":
			return me, nil
		}
		return fallback, nil
	}
	host, domain := systemHostname()
	var c Config
	if c.DefaultHost, err = control("defaulthost", "QMAILDEFAULTHOST", host); err != nil {
		return Config{}, err
	}
	if c.DefaultDomain, err = control("defaultdomain", "QMAILDEFAULTDOMAIN", domain); err != nil {
		return Config{}, err
	}
	if c.PlusDomain, err = control("plusdomain", "QMAILPLUSDOMAIN", domain); err != nil {
		return Config{}, err
	}
	if c.IDHost, err = control("idhost", "QMAILIDHOST", host); err != nil {
		return Config{}, err
	}
	c.User = first("QMAILUSER", "MAILUSER", "USER", "LOGNAME")
	if c.User == "" {
		c.User = "anonymous"
	}
	c.Host = first("QMAILHOST", "MAILHOST")
	c.Name = first("QMAILNAME", "MAILNAME", "NAME")
	c.SenderUser = first("QMAILSUSER")
	c.SenderHost = first("QMAILSHOST")
	c.Flags = ParseFlags(getenv("QMAILINJECT"))
	return c, nil
}

// systemHostname returns the host name and its domain part, or qmail's
// literal placeholders when the name is unknown.
func systemHostname() (host, domain string) {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "defaulthost", "defaultdomain"
	}
	if i := strings.IndexByte(name, '.'); i >= 0 {
		domain = name[i+1:]
	}
	return name, domain
}
