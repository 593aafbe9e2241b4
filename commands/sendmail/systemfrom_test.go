package sendmail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/qmail/message"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// One setting, both places: with control/systemfrom (or
// $QBOX_SYSTEM_FROM), mail from a system user (the tests run as root)
// goes out with that address as envelope sender and From, whatever cron
// passes with -f and whatever From it writes; a full name stays; the null
// sender stays null.
func TestSystemFromRewritesSenderAndFrom(t *testing.T) {
	if !message.IsSystemUser(os.Getuid()) {
		t.Skip("runs as a system user (root in CI)")
	}
	inject := testpeer.Personality(t, "qmail-inject")
	env, _ := mailEnv(t, testpeer.ClosedAddr(t))
	home := envValue(env, "QMAILHOME")
	os.MkdirAll(filepath.Join(home, "control"), 0o755)
	if err := os.WriteFile(filepath.Join(home, "control", "systemfrom"), []byte("server@provider.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cron := "From: root (Cron Daemon)\nTo: admin@example.test\nSubject: cron\n\nout\n"
	code, stdout, stderr := run(t, inject, append(env, "QMAILNAME=CronDaemon"), cron, "-n", "-f", "root", "admin@example.test")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "Return-Path: <server@provider.example>\n") || !strings.Contains(stdout, "\nFrom: \"CronDaemon\" <server@provider.example>\n") ||
		strings.Contains(stdout, "From: root") {
		t.Fatalf("not rewritten:\n%s", stdout)
	}
	// The null sender is kept.
	_, stdout, _ = run(t, inject, env, "Subject: bounce\n\nx\n", "-n", "-f", "", "admin@example.test")
	if !strings.HasPrefix(stdout, "Return-Path: <>\n") {
		t.Fatalf("a null sender was rewritten:\n%s", stdout)
	}
	// sendmail, as cron calls it: what is queued carries the address too.
	sendmail := testpeer.Personality(t, "sendmail")
	env2, spoolDir := mailEnv(t, "", "QBOX_SYSTEM_FROM=ops@provider.example")
	code, _, stderr = run(t, sendmail, env2, cron, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")
	if code != 0 {
		t.Fatalf("sendmail: exit %d, %q", code, stderr)
	}
	q, _, err := (&spool.Spool{Dir: spoolDir}).Queued()
	if err != nil || len(q) != 1 || q[0].Message.Sender != "ops@provider.example" {
		t.Fatalf("queued %+v, %v", q, err)
	}
	// sendmail -bs (an SMTP conversation on stdin) rewrites the same way.
	env4, spoolDir4 := mailEnv(t, "", "QBOX_SYSTEM_FROM=ops@provider.example")
	bs := "HELO localhost\r\nMAIL FROM:<root@localhost>\r\nRCPT TO:<admin@example.test>\r\nDATA\r\n" +
		"From: root\r\nSubject: bs\r\n\r\nx\r\n.\r\nQUIT\r\n"
	if code, stdout, stderr := run(t, sendmail, env4, bs, "-bs"); code != 0 || !strings.Contains(stdout, "Ok: queued in the local spool") {
		t.Fatalf("sendmail -bs: exit %d, %q, %q", code, stdout, stderr)
	}
	q, _, err = (&spool.Spool{Dir: spoolDir4}).Queued()
	if err != nil || len(q) != 1 || q[0].Message.Sender != "ops@provider.example" {
		t.Fatalf("-bs queued %+v, %v", q, err)
	}
	// A bad setting is refused, not guessed at.
	env3, _ := mailEnv(t, "", "QBOX_SYSTEM_FROM=not an address")
	if code, _, stderr := run(t, sendmail, env3, cron, "-t"); code == 0 || !strings.Contains(stderr, "not an address like") {
		t.Fatalf("a bad QBOX_SYSTEM_FROM: exit %d, %q", code, stderr)
	}
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
