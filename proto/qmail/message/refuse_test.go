package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"qbox/proto"
)

// Hostile envelopes and header values are refused where they enter, with
// the error that tells the caller's fault (an argument, the environment)
// from the message's, never rewritten into another address.
func TestRefusedAddressesAndValues(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		cfg    func(*Config)
		opts   Options
		caller bool
		want   error
	}{
		{name: "LF in a recipient argument (used to go to y@defaulthost)", in: "Subject: x\n\nx\n",
			opts: Options{Recipients: []string{"root@x.test\nX: y"}}, caller: true, want: proto.ErrAddressBytes},
		{name: "CR in a recipient argument", in: "\n", opts: Options{Recipients: []string{"root@x.test\r"}}, caller: true, want: proto.ErrAddressBytes},
		{name: "NUL in a recipient argument", in: "\n", opts: Options{Recipients: []string{"root\x00@x.test"}}, caller: true, want: proto.ErrAddressBytes},
		{name: "empty recipient argument", in: "\n", opts: Options{Recipients: []string{""}}, caller: true, want: proto.ErrEmptyRecipient},
		{name: "<> as a recipient argument", in: "\n", opts: Options{Recipients: []string{"<>"}}, caller: true, want: proto.ErrEmptyRecipient},
		{name: "CR in -f", in: "\n", opts: Options{Sender: strp("me@x.test\rX"), Recipients: []string{"a@x.test"}}, caller: true, want: proto.ErrAddressBytes},
		{name: "NUL in a To address with -t", in: "To: a\x00b@x.test\n\nx\n", opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "NUL in a group name with -t", in: "To: friends\x00: a@x.test;\n\nx\n", opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "lone CR in a Cc with -t", in: "Cc: root@x.test\rX: y\n\nx\n", opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "LF in a quoted local part with -t", in: "To: \"a\n b\"@x.test, \"c\rd\"@x.test\n\nx\n", opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "NUL in an unparsable Bcc with -t", in: "Bcc: <a\x00@x.test\nTo: b@x.test\n\nx\n", opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "NUL in Resent-To of a resent message", in: "Resent-From: r@x.test\nResent-To: a\x00@x.test\nTo: b@x.test\n\nx\n",
			opts: Options{HeaderRecipients: true}, want: proto.ErrAddressBytes},
		{name: "NUL in Return-Path", in: "Return-Path: <a\x00@x.test>\n\nx\n", opts: Options{Recipients: []string{"b@x.test"}}, want: proto.ErrAddressBytes},
		{name: "LF in the full name", in: "Subject: x\n\nx\n", cfg: func(c *Config) { c.Name = "A\nBcc: x@y" },
			opts: Options{Recipients: []string{"b@x.test"}}, caller: true, want: ErrHeaderBytes},
		{name: "CR in the full name as a comment", in: "\n", cfg: func(c *Config) { c.Name, c.Flags = "A\rB", ParseFlags("c") },
			opts: Options{Recipients: []string{"b@x.test"}}, caller: true, want: ErrHeaderBytes},
		{name: "LF in $USER (the default sender)", in: "From: a@x.test\n\nx\n", cfg: func(c *Config) { c.User = "u\nBcc: x@y" },
			opts: Options{Recipients: []string{"b@x.test"}}, caller: true, want: proto.ErrAddressBytes},
		{name: "LF in $QMAILHOST (From)", in: "\n", cfg: func(c *Config) { c.Host = "h\nBcc: x@y" },
			opts: Options{Sender: strp("s@x.test"), Recipients: []string{"b@x.test"}}, caller: true, want: ErrHeaderBytes},
		{name: "LF in $QMAILIDHOST", in: "\n", cfg: func(c *Config) { c.IDHost = "h\nBcc: x@y" },
			opts: Options{Recipients: []string{"b@x.test"}}, caller: true, want: ErrHeaderBytes},
		{name: "LF in $QMAILDEFAULTHOST added to a bare recipient", in: "From: a@x.test\n\nx\n", cfg: func(c *Config) { c.DefaultHost = "h\nX" },
			opts: Options{Sender: strp("s@x.test"), Recipients: []string{"root"}}, caller: true, want: proto.ErrAddressBytes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fixedConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			m, err := Prepare(strings.NewReader(tc.in), cfg, tc.opts)
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("got %v (message %+v), want a *RefusedError", err, m)
			}
			if re.Caller != tc.caller || !errors.Is(err, tc.want) {
				t.Errorf("got %v (caller %v), want %v (caller %v)", err, re.Caller, tc.want, tc.caller)
			}
			if strings.ContainsAny(err.Error(), "\r\n\x00") {
				t.Errorf("error text %q holds control bytes", err)
			}
		})
	}
}

// What is legal stays so: folded fields, and bytes in fields that give no
// envelope address in this run, or in a full name that is not used.
func TestNotRefused(t *testing.T) {
	cfg := fixedConfig()
	m, err := Prepare(strings.NewReader("To: a@x.test,\r\n b@x.test\r\nCc: \"C\r\n D\" <c@x.test>\n\nx\n"), cfg, Options{HeaderRecipients: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Recipients, " "); got != "a@x.test b@x.test c@x.test" {
		t.Errorf("folded fields: recipients %q", got)
	}
	// Without -t the To field gives no address; a resent message takes
	// Resent-To, not To.
	for _, tc := range []struct {
		in   string
		opts Options
	}{
		{"To: a\x00@x.test\n\nx\n", Options{Recipients: []string{"b@x.test"}}},
		{"Resent-From: r@x.test\nResent-To: b@x.test\nTo: a\x00@x.test\n\nx\n", Options{HeaderRecipients: true}},
		{"Return-Path: <a\x00@x.test>\n\nx\n", Options{Sender: strp("s@x.test"), Recipients: []string{"b@x.test"}}},
	} {
		if _, err := Prepare(strings.NewReader(tc.in), cfg, tc.opts); err != nil {
			t.Errorf("%q: %v", tc.in, err)
		}
	}
	// A message with its own From never uses the full name.
	cfg.Name = "A\nBcc: x@y"
	m, err = Prepare(strings.NewReader("From: me@x.test\n\nx\n"), cfg, Options{Recipients: []string{"b@x.test"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(m.Reader())
	if bytes.Contains(out, []byte("Bcc")) {
		t.Errorf("the unused name reached the header:\n%s", out)
	}
}

// FuzzPrepare: whatever the message, the recipient argument, the sender
// argument and the full name, a prepared message has an envelope that
// passes the address check, and its header is whole lines of fields and
// their continuations: no byte of the caller's splits a header line.
func FuzzPrepare(f *testing.F) {
	f.Add("To: a@x.test\nSubject: s\n\nbody\n", "b@x.test", "s@x.test", "Name", true)
	f.Add("Cc: \"q\r\n x\"@y, g: a\x00@b;\n\n", "root@x.test\nX: y", "<>", "A\nBcc: x@y", true)
	f.Add("Resent-To: r@x\nReturn-Path: <p\r@x>\n", "", "", "", false)
	var in strings.Reader
	br := bufio.NewReader(&in)
	f.Fuzz(func(t *testing.T, msg, rcpt, sender, name string, headerRcpts bool) {
		// Short inputs and a 128-byte header limit reach every path and
		// keep the fuzzer's minimization (quadratic in the input's
		// length) from stalling the workers; the reader is reused.
		if len(msg)+len(rcpt)+len(sender)+len(name) > 256 {
			return
		}
		in.Reset(msg)
		br.Reset(&in)
		cfg := fixedConfig()
		cfg.Name = name
		cfg.MaxHeader = 128
		opts := Options{Recipients: []string{rcpt}, HeaderRecipients: headerRcpts}
		if sender != "" {
			opts.Sender = &sender
		}
		m, err := Prepare(br, cfg, opts)
		if err != nil {
			return
		}
		if err := proto.CheckSender(m.Sender); err != nil {
			t.Fatalf("sender %q: %v", m.Sender, err)
		}
		for _, r := range m.Recipients {
			if err := proto.CheckRecipient(r); err != nil {
				t.Fatalf("recipient %q: %v", r, err)
			}
		}
		hdr := m.Header
		for len(hdr) > 0 {
			i := bytes.IndexByte(hdr, '\n')
			if i < 0 {
				t.Fatalf("header does not end in a line end: %q", m.Header)
			}
			line := hdr[:i+1]
			hdr = hdr[i+1:]
			if len(line) == 1 && len(hdr) == 0 {
				break // the blank line that ends it
			}
			if _, ok := fieldName(line); !ok && line[0] != ' ' && line[0] != '\t' {
				t.Fatalf("header line %q is neither a field nor a continuation:\n%q", line, m.Header)
			}
		}
	})
}

// A control file is read only as far as its first line can go: a
// first line longer than a host name can be is an error, and /dev/zero
// as control/me is refused after a few KiB instead of filling memory.
func TestControlFileBounded(t *testing.T) {
	home := t.TempDir()
	ctl := home + "/control"
	if err := os.MkdirAll(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "QMAILHOME" {
			return home
		}
		return ""
	}
	if err := os.Symlink("/dev/zero", ctl+"/me"); err != nil {
		t.Fatal(err)
	}
	if _, err := ConfigFromEnv(getenv); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("control/me -> /dev/zero: %v", err)
	}
	os.Remove(ctl + "/me")
	if err := os.WriteFile(ctl+"/me", []byte("me.example.org\n"+strings.Repeat("x", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromEnv(getenv)
	if err != nil || cfg.DefaultHost != "me.example.org" {
		t.Errorf("long file after a short first line: %v, %q", err, cfg.DefaultHost)
	}
}
