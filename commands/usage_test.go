package commands

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// A usage error, as a user meets it: one line on stderr naming the
// problem and the nearest valid flag or command, then where to read more
// ("see 'qbox CMD --help'", or the personality's own name), nothing on
// stdout, and the permanent exit status (qbox's 100, sendmail's 64): a
// script must not retry a typo.
func TestUsageErrorsAreOneLine(t *testing.T) {
	bin := testpeer.Binary(t)
	cases := []struct {
		prog string // a personality; "" is qbox
		args []string
		want []string // substrings of the one stderr line
		not  []string // and what it must not hold (a name said twice)
		code int      // 0: 100
	}{
		{args: []string{"serve", "--smtp"}, want: []string{"qbox serve: --smtp needs a value", "see 'qbox serve --help'"}},
		{args: []string{"queue", "delete"}, want: []string{"qbox queue delete: ", "see 'qbox queue delete --help'"}, not: []string{"delete: qbox"}},
		{args: []string{"queue", "list", "extra", "--json"}, want: []string{`qbox queue list: unexpected argument "extra"`, "see 'qbox queue list --help'"}},
		{args: []string{"queue", "show"}, want: []string{"qbox queue show: ", "see 'qbox queue show --help'"}, not: []string{"show: qbox"}},
		{args: []string{"flush-maildir"}, want: []string{"usage: qbox flush-maildir ", "see 'qbox flush-maildir --help'"}, not: []string{"flush-maildir: usage"}},
		{prog: "sendmail", args: []string{"-bz"}, want: []string{"sendmail: -bz is not supported", "see 'sendmail --help'"}, code: 64},
		{prog: "qmail-inject", args: []string{"-Q"}, want: []string{"qmail-inject: fatal: unknown option -Q", "see 'qmail-inject --help'"}},
		{prog: "maildirqmtp", want: []string{"usage: maildirqmtp DIR PREFIX HOST", "see 'maildirqmtp --help'"}, not: []string{"maildirqmtp: usage"}},
		{prog: "maildirsmtp", args: []string{"d", "p", "h", ""}, want: []string{"maildirsmtp: the helohost argument is empty", "see 'maildirsmtp --help'"}},
		{args: []string{"inject", "--sever", "x"}, want: []string{"qbox inject: unknown flag --sever", "did you mean --server?", "qbox inject --help"}},
		{args: []string{"injet"}, want: []string{`unknown command "injet"`, `did you mean "inject"?`}},
		{args: []string{"serv", "--maildir", "x"}, want: []string{`unknown command "serv"`, `did you mean "serve"?`}},
		{args: nil, want: []string{"usage: qbox COMMAND", "inject", "serve"}},
		{args: []string{"serve", "--timeout", "5"}, want: []string{`invalid value "5" for --timeout`, "a duration needs a unit, e.g. 5s"}},
		{args: []string{"flush-maildir", "--jsn"}, want: []string{"unknown flag --jsn", "did you mean --json?"}},
		{args: []string{"--bogus"}, want: []string{"qbox: unknown flag --bogus"}},
	}
	for _, tc := range cases {
		prog, path := tc.prog, bin
		if prog == "" {
			prog = "qbox"
		} else {
			path = testpeer.Personality(t, prog)
		}
		t.Run(strings.Join(append([]string{prog}, tc.args...), " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(path, tc.args...)
			cmd.Stdin = strings.NewReader("")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			want := tc.code
			if want == 0 {
				want = 100
			}
			if code := testpeer.ExitCode(t, cmd.Run()); code != want {
				t.Errorf("exit %d, want %d", code, want)
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
			for _, w := range tc.not {
				if strings.Contains(line, w) {
					t.Errorf("stderr %q holds %q", line, w)
				}
			}
		})
	}
}

// A personality whose command line can be wrong answers a lone --help
// with its synopsis on stdout and exit 0, so the "see 'sendmail --help'"
// of its usage errors leads somewhere.
func TestPersonalityHelp(t *testing.T) {
	for name, want := range map[string]string{
		"sendmail":     "usage: sendmail [-t]",
		"qmail-inject": "usage: qmail-inject [-aAhHnN]",
		"maildirqmtp":  "usage: maildirqmtp DIR PREFIX HOST[:PORT]\nSee maildirqmtp(1)",
		"maildirsmtp":  "usage: maildirsmtp DIR PREFIX HOST[:PORT] HELOHOST\n",
	} {
		cmd := exec.Command(testpeer.Personality(t, name), "--help")
		cmd.Stdin = strings.NewReader("")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if code := testpeer.ExitCode(t, err); code != 0 || !strings.HasPrefix(string(out), want) || stderr.Len() != 0 {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q; want exit 0 and %q", name, code, out, stderr.String(), want)
		}
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
		// One default a flag: not the usage's and urfave/cli's both.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Count(strings.ToLower(line), "default") > 1 {
				t.Errorf("qbox %v --help: two defaults in %q", args, line)
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
