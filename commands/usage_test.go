package commands

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// A usage error, as a user meets it: one line on stderr naming the
// problem and the nearest valid flag or command, nothing on stdout, and
// the permanent exit status 100 (a script must not retry a typo).
func TestUsageErrorsAreOneLine(t *testing.T) {
	bin := testpeer.Binary(t)
	cases := []struct {
		args []string
		want []string // substrings of the one stderr line
	}{
		{[]string{"inject", "--sever", "x"}, []string{"qbox inject: unknown flag --sever", "did you mean --server?", "qbox inject --help"}},
		{[]string{"injet"}, []string{`unknown command "injet"`, `did you mean "inject"?`}},
		{[]string{"serv", "--maildir", "x"}, []string{`unknown command "serv"`, `did you mean "serve"?`}},
		{nil, []string{"usage: qbox COMMAND", "inject", "serve"}},
		{[]string{"serve", "--timeout", "5"}, []string{`invalid value "5" for --timeout`, "a duration needs a unit, e.g. 5s"}},
		{[]string{"flush-maildir", "--jsn"}, []string{"unknown flag --jsn", "did you mean --json?"}},
		{[]string{"--bogus"}, []string{"qbox: unknown flag --bogus"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(append([]string{"qbox"}, tc.args...), " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if code := testpeer.ExitCode(t, cmd.Run()); code != 100 {
				t.Errorf("exit %d, want 100", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout holds %d bytes, want none:\n%s", stdout.Len(), stdout.String())
			}
			line := stderr.String()
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("stderr is not one line: %q", line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("stderr %q lacks %q", line, w)
				}
			}
		})
	}
}

// Asking for help is not an error.
func TestHelpExitsZero(t *testing.T) {
	bin := testpeer.Binary(t)
	for _, args := range [][]string{{"--help"}, {"help"}, {"inject", "--help"}, {"help", "serve"}} {
		out, err := exec.Command(bin, args...).Output()
		if code := testpeer.ExitCode(t, err); code != 0 || len(out) == 0 {
			t.Errorf("qbox %v: exit %d, %d bytes of help", args, code, len(out))
		}
	}
}

// Help shows each flag with what it takes and a default only where there
// is one: none of urfave/cli's "(default: false)" on every switch, "value"
// for a placeholder, or a repeatable flag's names twice.
func TestHelpShowsNoLibraryArtefacts(t *testing.T) {
	bin := testpeer.Binary(t)
	for _, args := range [][]string{{"inject"}, {"serve"}, {"flush-maildir"}, {"mx-check"}, {"probe"}, {"queue", "check"}, {"queue", "list"}} {
		out, err := exec.Command(bin, append(args, "--help")...).Output()
		if code := testpeer.ExitCode(t, err); code != 0 {
			t.Fatalf("qbox %v --help: exit %d", args, code)
		}
		for _, bad := range []string{"(default: false)", " value ", "[ --", `(default: "`} {
			if strings.Contains(string(out), bad) {
				t.Errorf("qbox %v --help holds %q:\n%s", args, bad, out)
			}
		}
	}
	out, _ := exec.Command(bin, "inject", "--help").Output()
	if !strings.Contains(string(out), "--connect-timeout DURATION") || strings.Contains(string(out), "timeout-connect") {
		t.Errorf("inject --help: want --connect-timeout DURATION and not the old name:\n%s", out)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"injet", "inject", 1}, {"serv", "serve", 1}, {"kitten", "sitting", 3}, {"abc", "", 3}} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}
