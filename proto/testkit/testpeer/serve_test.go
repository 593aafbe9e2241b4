package testpeer

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestStartServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	s := StartServe(t, "--maildir", dir, "--qmqp", "127.0.0.1:0", "--qmtp=127.0.0.1:0", "--smtp", "127.0.0.1:0")
	if s.Maildir != dir {
		t.Errorf("Maildir %q, want %q", s.Maildir, dir)
	}
	for _, a := range []string{s.QMQP, s.QMTP, s.SMTP} {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatalf("dial %q: %v", a, err)
		}
		c.Close()
	}
	off := StartServe(t, "--maildir", dir, "--qmqp", "", "--qmtp", "127.0.0.1:0")
	if off.QMQP != "" || off.SMTP != "" || off.QMTP == "" {
		t.Fatalf("QMQP %q SMTP %q QMTP %q: want only QMTP", off.QMQP, off.SMTP, off.QMTP)
	}
}

func TestLogfmt(t *testing.T) {
	kv := logfmt(`time=2026-11-30T15:42:10.599Z level=INFO msg=listening proto=qmqp addr=127.0.0.1:46637`)
	if kv["msg"] != "listening" || kv["proto"] != "qmqp" || kv["addr"] != "127.0.0.1:46637" {
		t.Fatalf("%v", kv)
	}
	kv = logfmt(`level=INFO msg="a b=c" addr="[::1]:25" x=`)
	if kv["msg"] != "a b=c" || kv["addr"] != "[::1]:25" || kv["x"] != "" {
		t.Fatalf("%v", kv)
	}
}

func TestClosedAddr(t *testing.T) {
	addr := ClosedAddr(t)
	_, err := net.Dial("tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// Root is the module's root wherever this package lives: Binary builds
// the command there.
func TestRoot(t *testing.T) {
	if _, err := os.Stat(filepath.Join(Root(), "go.mod")); err != nil {
		t.Fatalf("Root() = %s: %v", Root(), err)
	}
}
