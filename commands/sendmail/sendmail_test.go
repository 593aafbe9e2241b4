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

// queuedFiles counts the recipients queued in the spool dir (and the
// files there that are not messages).
func queuedFiles(t *testing.T, dir string) int {
	t.Helper()
	sp := &spool.Spool{Dir: dir}
	q, bad, err := sp.Queued()
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(q) + len(bad)
}

// spoolCopies returns each queued recipient's message as the old layout
// held it (Return-Path, Delivered-To, the message).
func spoolCopies(t *testing.T, dir string) [][]byte {
	t.Helper()
	q, _, err := (&spool.Spool{Dir: dir}).Queued()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, r := range q {
		b, err := r.Copy()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
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
	if code != 0 || !strings.Contains(stderr, "no relay configured") || !strings.Contains(stderr, "queued in") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files queued, want 1", n)
	}
	code, out, _ := run(t, sendmail, env, "", "-bp")
	if code != 0 || !strings.Contains(out, "last error") || !strings.Contains(out, "no relay configured") {
		t.Fatalf("sendmail -bp exit %d:\n%s", code, out)
	}
}

// spoolRecipients counts the recipients queued in the spool dir.
func spoolRecipients(t *testing.T, dir string) map[string]int {
	t.Helper()
	q, bad, err := (&spool.Spool{Dir: dir}).Queued()
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("malformed files in %s: %v", dir, bad)
	}
	out := map[string]int{}
	for _, r := range q {
		out[r.Recipient]++
	}
	return out
}

// More recipients than allowed: refused whole at sendmail time with 64
// (never cut, nothing queued); -O MaxRecipientsPerMessage=N and
// control/maxrecipients set the limit.
func TestRecipientLimit(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	rcpts := []string{"a@example.test", "b@example.test", "c@example.test", "d@example.test"}
	code, _, stderr := run(t, sendmail, env, "Subject: x\n\nx\n", append([]string{"-O", "MaxRecipientsPerMessage=3"}, rcpts...)...)
	if code != 64 || !strings.Contains(stderr, "4 recipients, more than the 3") {
		t.Fatalf("over the flag's limit: exit %d, %q; want 64", code, stderr)
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Fatalf("%d recipients queued after a refusal", n)
	}
	home := ""
	for _, kv := range env {
		if h, ok := strings.CutPrefix(kv, "QMAILHOME="); ok {
			home = h
		}
	}
	os.MkdirAll(filepath.Join(home, "control"), 0o755)
	if err := os.WriteFile(filepath.Join(home, "control", "maxrecipients"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, sendmail, env, "Subject: x\n\nx\n", rcpts[:3]...)
	if code != 64 || !strings.Contains(stderr, "control/maxrecipients") {
		t.Fatalf("over the control file's limit: exit %d, %q; want 64", code, stderr)
	}
	// The flag overrides the file; within the limit the message is queued
	// (the relay is down) with all its recipients.
	code, _, stderr = run(t, sendmail, env, "Subject: x\n\nx\n", append([]string{"-OMaxRecipientsPerMessage=4"}, rcpts...)...)
	if code != 0 || queuedFiles(t, spoolDir) != 4 {
		t.Fatalf("within the flag's limit: exit %d, %q, %d queued", code, stderr, queuedFiles(t, spoolDir))
	}
	code, _, stderr = run(t, sendmail, env, "Subject: x\n\nx\n", "-O", "MaxRecipientsPerMessage=0", "a@example.test")
	if code != 64 || !strings.Contains(stderr, "MaxRecipientsPerMessage") {
		t.Fatalf("a bad limit: exit %d, %q; want 64", code, stderr)
	}
}
