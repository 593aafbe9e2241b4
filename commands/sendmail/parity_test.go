package sendmail

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// withoutEnv is env with every variable called name dropped.
func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// TestSenderFromPasswdWhenNoUserInEnv: cron and systemd units run
// sendmail with USER and LOGNAME unset. The sendmail personality then
// names the sender by the uid's login name, as sendmail and Postfix do;
// the qmail-inject personality keeps qmail's rule (anonymous).
func TestSenderFromPasswdWhenNoUserInEnv(t *testing.T) {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Skipf("this uid has no passwd entry: %v", err)
	}
	for _, tc := range []struct {
		personality, want string
	}{
		{"sendmail", u.Username + "@example.test"},
		{"qmail-inject", "anonymous@example.test"},
	} {
		t.Run(tc.personality, func(t *testing.T) {
			prog := testpeer.Personality(t, tc.personality)
			env, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
			env = withoutEnv(env, "USER")
			code, _, stderr := run(t, prog, env, "To: someone@example.test\nSubject: cron\n\nbody\n", "someone@example.test")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			files := spoolCopies(t, spoolDir)
			if len(files) != 1 {
				t.Fatalf("%d spool files, want 1", len(files))
			}
			b := files[0]
			if !strings.HasPrefix(string(b), "Return-Path: <"+tc.want+">\n") {
				t.Errorf("sender: got %q, want Return-Path: <%s>", strings.SplitN(string(b), "\n", 2)[0], tc.want)
			}
			if !strings.Contains(string(b), "\nFrom: "+tc.want+"\n") {
				t.Errorf("From field is not %s:\n%s", tc.want, b)
			}
		})
	}
}

// TestNewaliases: Debian's maintainer scripts call newaliases; it
// succeeds with one line on stderr and nothing on stdout.
func TestNewaliases(t *testing.T) {
	newaliases := testpeer.Personality(t, "newaliases")
	env, _ := mailEnv(t, testpeer.ClosedAddr(t))
	code, stdout, stderr := run(t, newaliases, env, "")
	if code != 0 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "newaliases: ") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0, nothing, one line", code, stdout, stderr)
	}
}

// TestNoServersMessageNamesSendmailConfiguration: sendmail has no
// --server option; its message names what sendmail reads.
func TestNoServersMessageNamesSendmailConfiguration(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	env, _ := mailEnv(t, "")
	code, _, stderr := run(t, sendmail, env, "Subject: x\n\nx\n", "-v", "someone@example.test")
	if code != 0 || strings.Contains(stderr, "--server") || !strings.Contains(stderr, "$QMQPSERVERS") ||
		!strings.Contains(stderr, filepath.Join("control", "qmqpservers")) {
		t.Fatalf("exit %d, stderr %q: want $QMQPSERVERS and control/qmqpservers, no --server", code, stderr)
	}
}

// TestQueuedSilentlyForCron: cron mails whatever a job writes. With
// stderr a file (no person reading) and the hub down, sendmail queues
// the message, exits 0 and writes nothing; -v prints the note.
func TestQueuedSilentlyForCron(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
	out, err := os.Create(filepath.Join(t.TempDir(), "cron-output"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(sendmail, "-t", "-i", "-FCronDaemon", "-oem")
	cmd.Env = cleanEnv(env)
	cmd.Stdin = strings.NewReader("To: root\nSubject: Cron <root@host> backup\n\nbackup done\n")
	cmd.Stdout, cmd.Stderr = out, out
	if code := testpeer.ExitCode(t, cmd.Run()); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if b, _ := os.ReadFile(out.Name()); len(b) != 0 {
		t.Errorf("sendmail wrote %q during an outage; cron would mail it", b)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files queued, want 1", n)
	}
	code, _, stderr := run(t, sendmail, env, "Subject: x\n\nx\n", "-v", "root")
	if code != 0 || !strings.Contains(stderr, "queued in "+spoolDir) {
		t.Fatalf("-v: exit %d, stderr %q; want the queued note", code, stderr)
	}
}
