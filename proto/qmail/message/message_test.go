package message

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedConfig is a deterministic environment: a fixed clock, pid and
// counter, and qmail-style defaults.
func fixedConfig() Config {
	return Config{
		User:          "alice",
		Host:          "mail.example.org",
		Name:          "Alice Example",
		DefaultHost:   "defaulthost.example.org",
		DefaultDomain: "example.org",
		PlusDomain:    "plus.example.org",
		IDHost:        "id.example.org",
		Now:           func() time.Time { return time.Date(1995, 9, 26, 4, 46, 53, 0, time.UTC) },
		PID:           12345,
		Count:         func() uint64 { return 0 },
	}
}

func strp(s string) *string { return &s }

// render is what a golden file holds: the envelope, a separator, then the
// prepared message byte for byte.
func render(t *testing.T, m *Message) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("Envelope-Sender: <" + m.Sender + ">\n")
	for _, r := range m.Recipients {
		b.WriteString("Envelope-Recipient: <" + r + ">\n")
	}
	b.WriteString("-- message --\n")
	if _, err := io.Copy(&b, m.Reader()); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		in   string // testdata/<in>.in
		cfg  func(*Config)
		opts Options
	}{
		{name: "missing-date-msgid-from", in: "missing-date-msgid-from", opts: Options{HeaderRecipients: true}},
		{name: "bcc-removal", in: "bcc-removal", opts: Options{HeaderRecipients: true}},
		{name: "resent", in: "resent", opts: Options{HeaderRecipients: true}},
		{name: "crlf", in: "crlf", opts: Options{HeaderRecipients: true}},
		{name: "no-final-newline", in: "no-final-newline", opts: Options{HeaderRecipients: true}},
		{name: "8bit-body", in: "8bit-body", opts: Options{HeaderRecipients: true}},
		{name: "mbox-from-line", in: "mbox-from-line", opts: Options{Recipients: []string{"root"}}},
		{name: "no-blank-line", in: "no-blank-line", opts: Options{Recipients: []string{"bob@example.com"}}},
		{name: "header-only", in: "header-only", opts: Options{Recipients: []string{"bob@example.com"}}},
		{name: "address-forms", in: "address-forms", opts: Options{HeaderRecipients: true, Recipients: []string{"arg@example.com"}}},
		{name: "sender-flag-overrides-return-path", in: "bcc-removal", opts: Options{Sender: strp("explicit"), HeaderRecipients: true}},
		{name: "null-sender", in: "missing-date-msgid-from", opts: Options{Sender: strp("<>"), HeaderRecipients: true}},
		{name: "comment-from", in: "missing-date-msgid-from", cfg: func(c *Config) { c.Flags = ParseFlags("c") }, opts: Options{HeaderRecipients: true}},
		{name: "flags-s-f-i", in: "bcc-removal", cfg: func(c *Config) { c.Flags = ParseFlags("sfi") }, opts: Options{HeaderRecipients: true}},
		{name: "verp-r", in: "missing-date-msgid-from", cfg: func(c *Config) { c.Flags = ParseFlags("r") }, opts: Options{HeaderRecipients: true}},
		{name: "verp-m-sender-env", in: "missing-date-msgid-from", cfg: func(c *Config) {
			c.Flags = ParseFlags("m")
			c.SenderUser, c.SenderHost = "bounces", "lists.example.org"
		}, opts: Options{HeaderRecipients: true}},
		{name: "no-name-no-host", in: "missing-date-msgid-from", cfg: func(c *Config) { c.Name, c.Host = "", "" }, opts: Options{HeaderRecipients: true}},
		{name: "args-only", in: "bcc-removal", opts: Options{Recipients: []string{"one", "two@host+", "\"three x\"@example.com"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tc.in+".in"))
			if err != nil {
				t.Fatal(err)
			}
			cfg := fixedConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			m, err := Prepare(bytes.NewReader(in), cfg, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, m)
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("prepared message differs from %s\n--- got ---\n%s\n--- want ---\n%s", golden, got, want)
			}
			// The same result when the input trickles in a byte at a
			// time (line and CRLF handling across read boundaries).
			m2, err := Prepare(iotest.OneByteReader(bytes.NewReader(in)), cfg, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got2 := render(t, m2); !bytes.Equal(got2, got) {
				t.Errorf("one-byte reads give a different result:\n%s", got2)
			}
			// BodyOffset lets a caller re-read the body from a seekable
			// input and get the same bytes.
			again, _ := io.ReadAll(NormalizeBody(bytes.NewReader(in[m.BodyOffset:])))
			m3, _ := Prepare(bytes.NewReader(in), cfg, tc.opts)
			first, _ := io.ReadAll(m3.Body)
			if !bytes.Equal(again, first) {
				t.Errorf("body re-read from BodyOffset %d = %q, want %q", m.BodyOffset, again, first)
			}
		})
	}
}

func TestBodyBytesUntouched(t *testing.T) {
	// Every byte value except the CR of a CRLF survives.
	var body []byte
	for i := 0; i < 256; i++ {
		if i != '\r' {
			body = append(body, byte(i))
		}
	}
	body = append(body, '\n')
	in := append([]byte("Subject: x\n\n"), body...)
	m, err := Prepare(bytes.NewReader(in), fixedConfig(), Options{Recipients: []string{"a@b.c"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(m.Body)
	if !bytes.Equal(got, body) {
		t.Fatalf("body changed:\n got %q\nwant %q", got, body)
	}
}

func TestNormalizeBody(t *testing.T) {
	cases := map[string]string{
		"":                 "",
		"a":                "a\n",
		"a\n":              "a\n",
		"a\r\n":            "a\n",
		"a\r":              "a\r\n",
		"\r":               "\r\n",
		"\r\r\n":           "\r\n",
		"a\r\nb\rc\r\n":    "a\nb\rc\n",
		"\r\n\r\n":         "\n\n",
		"x\n\r":            "x\n\r\n",
		"\xff\x00\r\n\x80": "\xff\x00\n\x80\n",
	}
	for in, want := range cases {
		for _, wrap := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
			iotest.DataErrReader,
			iotest.HalfReader,
		} {
			got, err := io.ReadAll(NormalizeBody(wrap(strings.NewReader(in))))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("NormalizeBody(%q) = %q, want %q", in, got, want)
			}
		}
		// A one-byte destination buffer.
		var out []byte
		r := NormalizeBody(strings.NewReader(in))
		p := make([]byte, 1)
		for {
			n, err := r.Read(p)
			out = append(out, p[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(out) != want {
			t.Errorf("NormalizeBody(%q) with 1-byte reads = %q, want %q", in, out, want)
		}
	}
}

func TestNormalizeBodyPropagatesErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NormalizeBody(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)))
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if string(got) != "abc" { // no final newline invented after a failed read
		t.Fatalf("got %q", got)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	cfg := fixedConfig()
	cfg.MaxHeader = 1024
	var in bytes.Buffer
	for in.Len() < 4096 {
		in.WriteString("X-Filler: 0123456789012345678901234567890123456789\n")
	}
	in.WriteString("\nbody\n")
	_, err := Prepare(&in, cfg, Options{Recipients: []string{"a@b.c"}})
	if !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("err = %v, want ErrHeaderTooLarge", err)
	}
	if !strings.Contains(err.Error(), "1024") {
		t.Errorf("error %q does not say the limit", err)
	}

	// One endless field line is refused too.
	long := "Subject: " + strings.Repeat("x", 5000) + "\n\nbody\n"
	if _, err := Prepare(strings.NewReader(long), cfg, Options{}); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("long field: err = %v, want ErrHeaderTooLarge", err)
	}

	// But a long first line that cannot be a field is body, not header.
	body := "this is body text, not a field " + strings.Repeat("y", 5000) + "\n"
	m, err := Prepare(strings.NewReader(body), cfg, Options{Recipients: []string{"a@b.c"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(m.Body)
	if string(got) != body {
		t.Fatalf("body = %q…, want the input", got[:40])
	}
	if m.BodyOffset != 0 {
		t.Fatalf("BodyOffset = %d, want 0", m.BodyOffset)
	}
}

// A body much larger than any buffer streams through without being held:
// the reader hands out the bytes as they come.
func TestBodyStreams(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("Subject: big\n\n"))
		chunk := bytes.Repeat([]byte("0123456789abcde\n"), 4096)
		for i := 0; i < 256; i++ { // 16 MiB
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	m, err := Prepare(pr, fixedConfig(), Options{Recipients: []string{"a@b.c"}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, m.Body)
	if err != nil || n != 16<<20 {
		t.Fatalf("body: %d bytes, %v; want %d", n, err, 16<<20)
	}
}

func TestParseAddressList(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"a@b.c", []string{"a@b.c"}},
		{" Joe <joe@x.y> ", []string{"joe@x.y"}},
		{`"Doe, John" <jd@x.y>, other@x.y`, []string{"jd@x.y", "other@x.y"}},
		{"x@y.z (Comment, with comma)", []string{"x@y.z"}},
		{"(lead) x@y.z", []string{"x@y.z"}},
		{"group: a@b.c, \"B\" <b@c.d>;, after@x.y", []string{"a@b.c", "b@c.d", "after@x.y"}},
		{"undisclosed-recipients:;", nil},
		{"recipient list not shown: ;", nil},
		{"<@r1.x,@r2.y:final@z.w>", []string{"final@z.w"}},
		{`"quoted local"@example.com`, []string{"quoted local@example.com"}},
		{"joe fred", []string{"joe", "fred"}},
		{"a@b.c\n\t, d@e.f", []string{"a@b.c", "d@e.f"}},
		{"<>", nil},
		{"u@[127.0.0.1]", []string{"u@[127.0.0.1]"}},
		{"first . last @ example . com", []string{"first.last@example.com"}},
		{"Name (nested (comment)) <n@x.y>", []string{"n@x.y"}},
		// CR and LF are not white space once folding is undone: they
		// stay in the address, for the envelope check to refuse it...
		{"\"a\nb\"@x.y", []string{"a\nb@x.y"}},
		// ...but a group's name is dropped whole, bytes and all: hence
		// Prepare checks the whole text of an argument or field.
		{"a@x.y\rX: y", []string{"y"}},
	}
	for _, tc := range cases {
		got, err := ParseAddressList(tc.in)
		if err != nil {
			t.Errorf("ParseAddressList(%q): %v", tc.in, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("ParseAddressList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"<a@b.c", "a@b.c>", `"open`, "(open", "[open", ")", "a@b.c)"} {
		if _, err := ParseAddressList(bad); err == nil {
			t.Errorf("ParseAddressList(%q): no error", bad)
		}
	}
}

func TestRewrite(t *testing.T) {
	cfg := fixedConfig()
	cases := map[string]string{
		"":             "",
		"root":         "root@defaulthost.example.org",
		"u@host":       "u@host.example.org",
		"u@host.dom":   "u@host.dom",
		"u@host+":      "u@host.plus.example.org",
		"u@[10.0.0.1]": "u@[10.0.0.1]",
		"list-@[]":     "list-@[]",
	}
	for in, want := range cases {
		if got := cfg.Rewrite(in); got != want {
			t.Errorf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "control"), 0o755)
	os.WriteFile(filepath.Join(home, "control", "me"), []byte("me.example.net\n"), 0o644)
	os.WriteFile(filepath.Join(home, "control", "defaultdomain"), []byte("dd.example.net\n"), 0o644)
	env := map[string]string{
		"QMAILHOME":   home,
		"USER":        "user",
		"LOGNAME":     "logname",
		"MAILUSER":    "mailuser",
		"MAILHOST":    "mailhost.example.net",
		"NAME":        "Plain Name",
		"MAILNAME":    "Mail Name",
		"QMAILSHOST":  "bounce.example.net",
		"QMAILINJECT": "cr",
		"QMAILIDHOST": "ids.example.net",
	}
	c, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		User: "mailuser", Host: "mailhost.example.net", Name: "Mail Name",
		SenderHost:  "bounce.example.net",
		DefaultHost: "me.example.net", DefaultDomain: "dd.example.net", PlusDomain: "me.example.net",
		IDHost: "ids.example.net", Flags: Flags{CommentFrom: true, VERPRecipient: true},
	}
	if c.User != want.User || c.Host != want.Host || c.Name != want.Name || c.SenderHost != want.SenderHost ||
		c.DefaultHost != want.DefaultHost || c.DefaultDomain != want.DefaultDomain || c.PlusDomain != want.PlusDomain ||
		c.IDHost != want.IDHost || c.Flags != want.Flags {
		t.Fatalf("ConfigFromEnv =\n%+v\nwant\n%+v", c, want)
	}
	// The Q-variables win over the plain ones.
	env["QMAILUSER"], env["QMAILHOST"], env["QMAILNAME"] = "quser", "qhost.example.net", "Q Name"
	c, _ = ConfigFromEnv(func(k string) string { return env[k] })
	if c.User != "quser" || c.Host != "qhost.example.net" || c.Name != "Q Name" {
		t.Fatalf("Q-variables not preferred: %+v", c)
	}
	// Nothing at all: this machine's name (qmail would use the literal
	// word "defaulthost"; a host without qmail should name itself).
	c, err = ConfigFromEnv(func(k string) string {
		if k == "QMAILHOME" {
			return t.TempDir()
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if c.User != "anonymous" || c.DefaultHost != host || c.IDHost != host || host == "" {
		t.Fatalf("fallbacks: %+v", c)
	}
}

func TestMessageIDUnique(t *testing.T) {
	cfg := fixedConfig()
	cfg.Count = nil // the real process counter
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		m, err := Prepare(strings.NewReader("Subject: x\n\nb\n"), cfg, Options{Recipients: []string{"a@b.c"}})
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(m.Header))
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "Message-ID: "); ok {
				if seen[id] {
					t.Fatalf("Message-ID %s repeated", id)
				}
				seen[id] = true
			}
		}
	}
	if len(seen) != 100 {
		t.Fatalf("%d Message-IDs for 100 messages", len(seen))
	}
}
