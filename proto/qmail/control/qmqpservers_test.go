package control

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto"
)

// The one resolver of the QMQP server list: flags, else $QMQPSERVERS,
// else control/qmqpservers, the file read as inject (strict) or as
// qmail-qmqpc (as qmail) reads it. (Moved from commands/inject's
// TestServersFunc, with the qmail-qmqpc rule added.)
func TestQMQPServers(t *testing.T) {
	home := t.TempDir()
	ctl := filepath.Join(home, "control")
	if err := os.MkdirAll(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(ctl, "qmqpservers")
	env := map[string]string{"QMAILHOME": home}
	getenv := func(k string) string { return env[k] }
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// No file: none for inject, an error naming the file for qmail-qmqpc.
	if _, err := QMQPServers(nil, getenv, FileStrict); err != ErrNoServers || !errors.Is(err, proto.ErrNoServers) {
		t.Fatalf("strict, no file: %v", err)
	}
	if _, err := QMQPServers(nil, getenv, FileAsQmail); err == nil || errors.Is(err, ErrNoServers) || !strings.Contains(err.Error(), "qmqpservers") {
		t.Fatalf("as qmail, no file: %v", err)
	}

	write(" 10.0.0.1 \n#x\n[::1]:1628\nmx.example.com\n")
	for _, rule := range []FileRule{FileStrict, FileAsQmail} {
		got, err := QMQPServers(nil, getenv, rule)
		if err != nil || strings.Join(got, " ") != "10.0.0.1 [::1]:1628 mx.example.com" {
			t.Fatalf("rule %d, control file: %q %v", rule, got, err)
		}
	}

	// A line that is no server: an error for inject, skipped by qmail-qmqpc.
	write("host:badport\n10.0.0.2\n")
	if _, err := QMQPServers(nil, getenv, FileStrict); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("strict, bad line: %v", err)
	}
	if got, err := QMQPServers(nil, getenv, FileAsQmail); err != nil || strings.Join(got, " ") != "10.0.0.2" {
		t.Fatalf("as qmail, bad line: %q %v", got, err)
	}
	// Nothing usable: none for inject, an error for qmail-qmqpc.
	write("# nothing\nhost:badport\n")
	if _, err := QMQPServers(nil, getenv, FileAsQmail); err == nil || !strings.Contains(err.Error(), "no usable") {
		t.Fatalf("as qmail, nothing usable: %v", err)
	}
	write("# nothing\n\n")
	if _, err := QMQPServers(nil, getenv, FileStrict); err != ErrNoServers {
		t.Fatalf("strict, empty file: %v", err)
	}

	// $QMQPSERVERS before the file, for both; a bad entry is an error
	// naming it, for both.
	env["QMQPSERVERS"] = "a.example, b.example:1628 c.example"
	for _, rule := range []FileRule{FileStrict, FileAsQmail} {
		got, err := QMQPServers(nil, getenv, rule)
		if err != nil || strings.Join(got, " ") != "a.example b.example:1628 c.example" {
			t.Fatalf("rule %d, QMQPSERVERS: %q %v", rule, got, err)
		}
	}
	env["QMQPSERVERS"] = "a.example host:notaport"
	for _, rule := range []FileRule{FileStrict, FileAsQmail} {
		if _, err := QMQPServers(nil, getenv, rule); err == nil || !strings.Contains(err.Error(), "$QMQPSERVERS") {
			t.Fatalf("rule %d, bad QMQPSERVERS: %v", rule, err)
		}
	}

	// Flags before everything.
	env["QMQPSERVERS"] = "a.example"
	got, err := QMQPServers([]string{"x.example", "[2001:db8::1]"}, getenv, FileStrict)
	if err != nil || strings.Join(got, " ") != "x.example [2001:db8::1]" {
		t.Fatalf("flags: %q %v", got, err)
	}

	// An unreadable file is an error of its own, for both.
	delete(env, "QMQPSERVERS")
	write("10.0.0.1\n")
	if err := os.Chmod(ctl, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ctl, 0o755)
	if os.Geteuid() != 0 { // root reads anything
		for _, rule := range []FileRule{FileStrict, FileAsQmail} {
			if _, err := QMQPServers(nil, getenv, rule); err == nil || err == ErrNoServers {
				t.Fatalf("rule %d, unreadable control file: %v", rule, err)
			}
		}
	}
}

// A control file beyond MaxServersFile is refused, not read.
func TestQMQPServersFileBounded(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "control"), 0o755)
	big := strings.Repeat("10.0.0.1\n", MaxServersFile/9+1)
	if err := os.WriteFile(filepath.Join(home, "control", "qmqpservers"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "QMAILHOME" {
			return home
		}
		return ""
	}
	if _, err := QMQPServers(nil, getenv, FileStrict); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized file: %v", err)
	}
}
