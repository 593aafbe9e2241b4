package sendmail

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// run runs a qbox personality with a clean mail environment plus env, and
// returns its exit status, stdout and stderr.
func run(t *testing.T, prog string, env []string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = cleanEnv(env)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := testpeer.ExitCode(t, cmd.Run())
	return code, stdout.String(), stderr.String()
}

// cleanEnv drops the variables that steer qmail-inject and qbox, so the
// test's own environment cannot change the result.
func cleanEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "QMAIL") || strings.HasPrefix(k, "QBOX") || k == "QMQPSERVERS" ||
			k == "MAILUSER" || k == "MAILHOST" || k == "MAILNAME" || k == "NAME" || k == "USER" || k == "LOGNAME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// mailEnv is a test's environment: its own spool and qmail home (no
// control files), the servers given, and example.test as the default host
// so bare names reach Postfix's test mailbox.
func mailEnv(t *testing.T, servers string, extra ...string) (env []string, spoolDir string) {
	spoolDir = filepath.Join(t.TempDir(), "spool")
	env = []string{
		"QBOX_SPOOL=" + spoolDir,
		"QMAILHOME=" + t.TempDir(),
		"QMQPSERVERS=" + servers,
		"QMAILDEFAULTHOST=example.test",
		"QMAILDEFAULTDOMAIN=example.test",
		"QMAILIDHOST=idhost.example.test",
		"USER=tester",
	}
	return append(env, extra...), spoolDir
}

func queuedFiles(t *testing.T, dir string) int {
	t.Helper()
	sp := &spool.Spool{Dir: dir}
	res, err := sp.List()
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Entries) + len(res.Malformed)
}

// header returns the values of every field called name in a delivered
// message's header.
func header(msg []byte, name string) []string {
	hdr := msg
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		hdr = msg[:i+1]
	}
	var vals []string
	for _, line := range strings.Split(string(hdr), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(k, name) {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// qmail-inject -n prints the message after a Return-Path line instead of
// sending it; $QMAILINJECT letters apply.
func TestQmailInjectPrint(t *testing.T) {
	inject := testpeer.Personality(t, "qmail-inject")
	env, _ := mailEnv(t, testpeer.ClosedAddr(t), "QMAILINJECT=c", "QMAILNAME=Joe Q")
	code, stdout, stderr := run(t, inject, env, "Subject: p\r\n\r\nbody", "-n", "-f", "s@example.test", "r")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "Return-Path: <s@example.test>\n") {
		t.Errorf("no Return-Path line first:\n%s", stdout)
	}
	for _, want := range []string{"\nFrom: tester@example.test (Joe Q)\n", "\nSubject: p\n", "\nCc: recipient list not shown: ;\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.HasSuffix(stdout, "\n\nbody\n") {
		t.Errorf("body not completed with a final newline:\n%q", stdout)
	}
}

// No QMQP server configured at all: the message is not lost but queued,
// and mailq says why.
func TestNoServersConfiguredSpools(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, "")
	code, _, stderr := run(t, sendmail, env, "Subject: x\n\nx\n", "-v", "someone@example.test")
	if code != 0 || !strings.Contains(stderr, "no QMQP server configured") || !strings.Contains(stderr, "queued in") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files queued, want 1", n)
	}
	code, out, _ := run(t, sendmail, env, "", "-bp")
	if code != 0 || !strings.Contains(out, "last error") || !strings.Contains(out, "no QMQP server configured") {
		t.Fatalf("sendmail -bp exit %d:\n%s", code, out)
	}
}
