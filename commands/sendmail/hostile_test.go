package sendmail

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// startServe runs qbox serve with a maildir and returns its QMQP address
// and the maildir. serve answers K only after the message is stored, so
// once a client has exited, the maildir holds all it will ever get from
// that client: counting files then is exact, without waiting.
func startServe(t *testing.T) (addr, maildir string) {
	t.Helper()
	maildir = filepath.Join(t.TempDir(), "Maildir")
	s := testpeer.StartServe(t, "--maildir", maildir, "--qmqp", "127.0.0.1:0", "--qmtp", "")
	return s.QMQP, maildir
}

func stored(t *testing.T, maildir string) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(maildir, "new", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// An address holding CR, LF or NUL, or an empty recipient, is refused
// with the personality's permanent status wherever it enters, and the
// message goes nowhere: not to the server (up here: it would have stored
// it by the time the command exits), not to the spool. Before, sendmail
// "$(printf 'root@x.test\nX: y')" was delivered to y@example.test, exit 0.
func TestHostileAddressesRefused(t *testing.T) {
	addr, maildir := startServe(t)
	sendmail := testpeer.Personality(t, "sendmail")
	inject := testpeer.Personality(t, "qmail-inject")
	env, spoolDir := mailEnv(t, addr)
	tests := []struct {
		name  string
		prog  string
		env   []string
		stdin string
		args  []string
		code  int
		why   string
	}{
		{"sendmail LF in a recipient", sendmail, nil, "Subject: x\n\nx\n", []string{"root@x.test\nX: y"}, 64, "CR, LF or NUL"},
		{"sendmail CR in a recipient", sendmail, nil, "Subject: x\n\nx\n", []string{"root@x.test\r"}, 64, "CR, LF or NUL"},
		{"sendmail LF in a list of recipients", sendmail, nil, "Subject: x\n\nx\n", []string{"a@x.test, root@x.test\nX: y"}, 64, "CR, LF or NUL"},
		{"sendmail empty recipient", sendmail, nil, "Subject: x\n\nx\n", []string{"a@x.test", ""}, 64, "empty recipient"},
		{"sendmail -f with CR", sendmail, nil, "Subject: x\n\nx\n", []string{"-f", "me@x.test\rX", "a@x.test"}, 64, "CR, LF or NUL"},
		{"sendmail -r with LF", sendmail, nil, "Subject: x\n\nx\n", []string{"-r", "me@x.test\nX: y", "a@x.test"}, 64, "CR, LF or NUL"},
		{"sendmail -t NUL in To", sendmail, nil, "To: a\x00b@x.test\nSubject: x\n\nx\n", []string{"-t"}, 65, "CR, LF or NUL"},
		{"sendmail -t lone CR in Cc", sendmail, nil, "Cc: root@x.test\rX: y\nSubject: x\n\nx\n", []string{"-t"}, 65, "CR, LF or NUL"},
		{"sendmail -t NUL in Resent-Bcc", sendmail, nil, "Resent-From: r@x.test\nResent-Bcc: a\x00@x.test\nResent-To: b@x.test\n\nx\n", []string{"-t"}, 65, "CR, LF or NUL"},
		{"sendmail NUL in Return-Path", sendmail, nil, "Return-Path: <a\x00@x.test>\n\nx\n", []string{"b@x.test"}, 65, "CR, LF or NUL"},
		{"sendmail LF in $QMAILSUSER", sendmail, []string{"QMAILSUSER=u\nX: y"}, "From: a@x.test\n\nx\n", []string{"b@x.test"}, 64, "CR, LF or NUL"},
		{"qmail-inject LF in a recipient", inject, nil, "Subject: x\n\nx\n", []string{"root@x.test\nX: y"}, 100, "CR, LF or NUL"},
		{"qmail-inject -f with CR", inject, nil, "Subject: x\n\nx\n", []string{"-f", "me@x.test\r", "a@x.test"}, 100, "CR, LF or NUL"},
		{"qmail-inject NUL in To", inject, nil, "To: a\x00@x.test\n\nx\n", nil, 100, "CR, LF or NUL"},
		{"qmail-inject empty recipient", inject, nil, "Subject: x\n\nx\n", []string{""}, 100, "empty recipient"},
	}
	for _, tc := range tests {
		code, _, stderr := run(t, tc.prog, append(append([]string{}, env...), tc.env...), tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.why) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d, stderr containing %q", tc.name, code, stderr, tc.code, tc.why)
		}
		if strings.ContainsAny(strings.TrimSuffix(stderr, "\n"), "\r\n\x00") {
			t.Errorf("%s: stderr holds control bytes: %q", tc.name, stderr)
		}
	}
	if msgs := stored(t, maildir); len(msgs) != 0 {
		t.Errorf("%d messages reached the server, want none:\n%s", len(msgs), bytes.Join(msgs, []byte("\n----\n")))
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled, want none", n)
	}
}

// A full name with CR or LF (-F, $NAME, $QMAILNAME, $MAILNAME) never
// splits the From header: it is refused (64; qmail-inject 100) when the
// From it would go into is added, and nothing is sent. A message with its
// own From does not use the name and goes through with its header whole.
func TestFullNameNeverSplitsAHeader(t *testing.T) {
	addr, maildir := startServe(t)
	sendmail := testpeer.Personality(t, "sendmail")
	inject := testpeer.Personality(t, "qmail-inject")
	env, spoolDir := mailEnv(t, addr)
	hostile := "A\nBcc: stolen@x.test"
	tests := []struct {
		name string
		prog string
		env  []string
		args []string
		code int
	}{
		{"sendmail -F", sendmail, nil, []string{"-F", hostile, "r@x.test"}, 64},
		{"sendmail -F with CR", sendmail, nil, []string{"-F", "A\rB", "r@x.test"}, 64},
		{"sendmail $NAME", sendmail, []string{"NAME=" + hostile}, []string{"r@x.test"}, 64},
		{"sendmail $MAILNAME", sendmail, []string{"MAILNAME=" + hostile}, []string{"r@x.test"}, 64},
		{"qmail-inject $QMAILNAME", inject, []string{"QMAILNAME=" + hostile}, []string{"r@x.test"}, 100},
		{"qmail-inject $QMAILNAME as a comment", inject, []string{"QMAILNAME=" + hostile, "QMAILINJECT=c"}, []string{"r@x.test"}, 100},
	}
	for _, tc := range tests {
		code, _, stderr := run(t, tc.prog, append(append([]string{}, env...), tc.env...), "Subject: x\n\nx\n", tc.args...)
		if code != tc.code || !strings.Contains(stderr, "full name") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d naming the full name", tc.name, code, stderr, tc.code)
		}
	}
	if msgs := stored(t, maildir); len(msgs) != 0 {
		t.Fatalf("%d messages reached the server, want none:\n%s", len(msgs), bytes.Join(msgs, []byte("\n----\n")))
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled, want none", n)
	}
	code, _, stderr := run(t, sendmail, env, "From: me@x.test\nSubject: own From\n\nx\n", "-F", hostile, "r@x.test")
	if code != 0 {
		t.Fatalf("a message with its own From: exit %d, %s", code, stderr)
	}
	msgs := stored(t, maildir)
	if len(msgs) != 1 || len(header(msgs[0], "Bcc")) != 0 || strings.Join(header(msgs[0], "From"), "|") != "me@x.test" {
		t.Fatalf("stored %d messages, want 1 with its own From and no Bcc:\n%s", len(msgs), bytes.Join(msgs, []byte("\n----\n")))
	}
}

// sendmail -bs is not a smuggling relay: only CRLF "." CRLF ends DATA. A
// "." line after or before a bare LF is text, and what follows it, however
// much it looks like a second transaction, is more text of the first
// message: the server stores exactly one message, for its recipient.
func TestSMTPSmugglingDeliversOneMessage(t *testing.T) {
	addr, maildir := startServe(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, addr)
	for i, dot := range []string{"\n.\n", "\r\n.\n", "\n.\r\n"} {
		before := len(stored(t, maildir))
		mark := "case-" + strconv.Itoa(i)
		smuggled := "MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@x.test>\r\nDATA\r\nSubject: smuggled " + mark + "\r\n\r\nforged\r\n.\r\n"
		in := "HELO client\r\nMAIL FROM:<me@x.test>\r\nRCPT TO:<you@x.test>\r\nDATA\r\nSubject: real " + mark + "\r\n\r\nbody" + dot + smuggled + "QUIT\r\n"
		code, out, stderr := run(t, sendmail, env, in, "-bs")
		if code != 0 {
			t.Fatalf("%q: exit %d, %s\n%s", dot, code, stderr, out)
		}
		all := stored(t, maildir)
		var msgs [][]byte
		for _, m := range all {
			if bytes.Contains(m, []byte(mark)) {
				msgs = append(msgs, m)
			}
		}
		if len(msgs) != 1 || len(all) != before+1 {
			t.Fatalf("%q: %d messages stored, want exactly 1:\n%s", dot, len(all)-before, bytes.Join(msgs, []byte("\n----\n")))
		}
		if got := header(msgs[0], "Delivered-To"); len(got) != 1 || got[0] != "you@x.test" {
			t.Errorf("%q: delivered to %q", dot, got)
		}
		if !bytes.Contains(msgs[0], []byte("RCPT TO:<victim@x.test>")) {
			t.Errorf("%q: the text after the dot is not in the message:\n%s", dot, msgs[0])
		}
		if c := strings.Join(codes(out), " "); c != "220 250 250 250 354 250 221" {
			t.Errorf("%q: replies %s:\n%s", dot, c, out)
		}
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled", n)
	}
}

// A default host with a line break in the environment neither splits
// -bs's replies nor reaches an envelope: the greeting stays one line, a
// bare recipient that would get that host is refused with 501 (it stays
// bare, and go-smtp takes no path without a domain).
func TestSMTPHostileDefaultHost(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, testpeer.ClosedAddr(t), "QMAILDEFAULTHOST=h.test\r\n250 fake")
	in := "EHLO c\r\nMAIL FROM:<me@x.test>\r\nRCPT TO:<root>\r\nQUIT\r\n"
	code, out, stderr := run(t, sendmail, env, in, "-bs")
	if code != 0 {
		t.Fatalf("exit %d, %s", code, stderr)
	}
	if l, bad := badReplyLine(out); bad {
		t.Errorf("reply line %q:\n%s", l, out)
	}
	if c := strings.Join(codes(out), " "); c != "220 250 250 501 221" {
		t.Errorf("replies %s:\n%s", c, out)
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files spooled", n)
	}
}
