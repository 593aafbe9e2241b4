package control

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFirstLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if v, err := FirstLine(filepath.Join(dir, "missing")); v != "" || err != nil {
		t.Errorf("missing: %q %v", v, err)
	}
	if v, err := FirstLine(write("me", "  mail.example.org \nsecond\n")); v != "mail.example.org" || err != nil {
		t.Errorf("me: %q %v", v, err)
	}
	if _, err := FirstLine(write("long", strings.Repeat("x", MaxLine+1))); err == nil {
		t.Error("a first line over MaxLine was accepted")
	}
	// A long file with a short first line is fine: only MaxLine+1 bytes are read.
	if v, err := FirstLine(write("big", "ok\n"+strings.Repeat("x", 1<<20))); v != "ok" || err != nil {
		t.Errorf("big: %q %v", v, err)
	}
}

func TestReadAndLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "qmqpservers")
	if _, err := Read(p, 10); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	os.WriteFile(p, []byte("# hub\n 10.0.0.1 \n\n10.0.0.2:628\n"), 0o644)
	b, err := Read(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := Lines(b); !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2:628"}) {
		t.Errorf("Lines = %q", got)
	}
	if _, err := Read(p, 5); err == nil {
		t.Error("a file over max was read")
	}
}

func TestHome(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if Home(getenv) != "/var/qmail" || Path(getenv, "me") != "/var/qmail/control/me" {
		t.Error("default home")
	}
	env["QMAILHOME"] = "/opt/q"
	if Path(getenv, "me") != "/opt/q/control/me" {
		t.Error("QMAILHOME")
	}
}

func TestSpawnedHome(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	wd := func(s string) func() (string, error) { return func() (string, error) { return s, nil } }
	for _, c := range []struct {
		qmailhome, wd, want string
		where               Where
	}{
		{"", "/opt/nq/queue/mess", "/opt/nq", FromWorkDir},
		{"", "/opt/nq/queue/mess/", "/opt/nq", FromWorkDir},
		{"", "/queue/mess", "/", FromWorkDir},
		{"/env/q", "/opt/nq/queue/mess", "/env/q", FromEnv},
		{"", "/opt/nq/queue", DefaultHome, FromDefault},
		{"", "/opt/nq/mess", DefaultHome, FromDefault},
		{"", "/opt/nq/queue/mess/x", DefaultHome, FromDefault},
		{"", "queue/mess", DefaultHome, FromDefault},
		{"", "", DefaultHome, FromDefault},
	} {
		env["QMAILHOME"] = c.qmailhome
		home, where := SpawnedHome(getenv, wd(c.wd))
		if home != c.want || where != c.where {
			t.Errorf("QMAILHOME=%q, wd %q: %q (%v), want %q (%v)", c.qmailhome, c.wd, home, where, c.want, c.where)
		}
	}
	env["QMAILHOME"] = ""
	if home, where := SpawnedHome(getenv, func() (string, error) { return "", os.ErrPermission }); home != DefaultHome || where != FromDefault {
		t.Errorf("getwd failing: %q (%v)", home, where)
	}
	if home, where := SpawnedHome(getenv, nil); home != DefaultHome || where != FromDefault {
		t.Errorf("no getwd: %q (%v)", home, where)
	}
}
