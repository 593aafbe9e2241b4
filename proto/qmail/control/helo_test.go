package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The EHLO name when none is given: control/helohost, else control/me,
// under $QMAILHOME, else the host name; an oversized or unusable name is
// an error, never sent.
func TestHelo(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		files map[string]string
		want  string
		err   string
	}{
		{"helohost", map[string]string{"helohost": "helo.example\n", "me": "me.example\n"}, "helo.example", ""},
		{"me", map[string]string{"me": "  me.example  \nsecond line\n"}, "me.example", ""},
		{"empty helohost", map[string]string{"helohost": "\n", "me": "me.example"}, "me.example", ""},
		{"host name", nil, host, ""},
		{"space", map[string]string{"helohost": "two words\n"}, "", "not a host name"},
		{"huge line", map[string]string{"me": strings.Repeat("x", 100000)}, "", "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := t.TempDir()
			ctl := filepath.Join(home, "control")
			if err := os.Mkdir(ctl, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range c.files {
				if err := os.WriteFile(filepath.Join(ctl, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Helo(func(k string) string {
				if k == "QMAILHOME" {
					return home
				}
				return ""
			})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %q, err %v; want an error about %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, err %v; want %q", got, err, c.want)
			}
		})
	}
}
