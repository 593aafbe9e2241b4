package relay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNetrc(t *testing.T) {
	n, err := ParseNetrc([]byte(`# a comment
machine smtp.example.com login mailer password s3cret
machine other.example login "a b" password "with \"quotes\" and spaces"
macdef init
cd /pub

default login anon password guest
`))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := n.Find("SMTP.example.com", "mailer"); !ok || e.Password != "s3cret" {
		t.Errorf("Find smtp.example.com = %+v, %v", e, ok)
	}
	if e, ok := n.Find("other.example", "a b"); !ok || e.Password != `with "quotes" and spaces` {
		t.Errorf("Find other.example = %+v, %v", e, ok)
	}
	if e, ok := n.Find("smtp.example.com", "anon"); !ok || e.Machine != "" || e.Password != "guest" {
		t.Errorf("a login with no machine entry of its own should fall to the default: %+v, %v", e, ok)
	}
	if e, ok := n.Find("smtp.example.com", "someone-else"); ok {
		t.Errorf("a login nobody listed matched %+v", e)
	}
	for _, bad := range []string{
		"login x",                     // before any machine
		"machine",                     // no value
		"machine a password \"open",   // unterminated
		"machine a frobnicate b",      // unknown word
		"machine a password \"a\nb\"", // a line break in a quoted word
		"machine " + strings.Repeat("x", maxToken+1),
	} {
		if _, err := ParseNetrc([]byte(bad)); err == nil {
			t.Errorf("ParseNetrc(%q) took it", bad)
		}
	}
	if _, err := ParseNetrc(make([]byte, MaxNetrc+1)); err == nil {
		t.Error("an oversize netrc was parsed")
	}
}

func TestLoadNetrcRefusesUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "netrc")
	if err := os.WriteFile(good, []byte("machine h login u password p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNetrc(good); err != nil {
		t.Fatalf("a 0600 netrc of the caller's: %v", err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("machine h login u password p\n"), 0o600)
	os.Chmod(open, 0o640)
	if _, err := LoadNetrc(open); !errors.Is(err, ErrUnsafeNetrc) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable netrc: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	if _, err := LoadNetrc(link); !errors.Is(err, ErrUnsafeNetrc) {
		t.Errorf("a netrc that is a symbolic link: %v", err)
	}
	if _, err := LoadNetrc(dir); !errors.Is(err, ErrUnsafeNetrc) {
		t.Errorf("a directory: %v", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other")
		os.WriteFile(other, []byte("machine h login u password p\n"), 0o600)
		os.Chown(other, 12345, 12345)
		if _, err := LoadNetrc(other); !errors.Is(err, ErrUnsafeNetrc) || !strings.Contains(err.Error(), "uid 12345") {
			t.Errorf("a netrc of another user's, read by root: %v", err)
		}
	}
}
