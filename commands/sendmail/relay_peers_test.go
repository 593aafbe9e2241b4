//go:build peers

package sendmail

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
	"qbox/proto/testkit/testtls"
)

// The password of the test's SASL user, and a wrong one; neither may
// appear in any output, queue file or log.
const (
	rightPassword = "Right-Pa55-7c1f"
	wrongPassword = "Wrong-Pa55-93ab"
)

// submissionPeer starts a private Postfix with SASL submission listeners
// under a CA of the test's, and returns it with the CA file.
func submissionPeer(t *testing.T) (*testpeer.Postfix, string) {
	t.Helper()
	ca := testtls.NewCA(t, "qbox test CA")
	dir := t.TempDir()
	caFile, certFile, keyFile := ca.Files(t, dir, "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(rightPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	pf := testpeer.StartPostfixSubmission(t, testpeer.Submission{CertFile: certFile, KeyFile: keyFile, User: "mailer", PasswordFile: pw})
	return pf, caFile
}

func writeNetrcFile(t *testing.T, qmailhome, host, password string) {
	t.Helper()
	os.MkdirAll(filepath.Join(qmailhome, "control"), 0o755)
	if err := os.WriteFile(filepath.Join(qmailhome, "control", "netrc"), []byte("machine "+host+" login mailer password "+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// noSecret fails the test when a password shows in any file under the
// directories or in the texts.
func noSecret(t *testing.T, dirs []string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, rightPassword) || strings.Contains(s, wrongPassword) {
			t.Errorf("a password shows in output:\n%s", s)
		}
	}
	for _, d := range dirs {
		filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || filepath.Base(path) == "netrc" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err == nil && (strings.Contains(string(b), rightPassword) || strings.Contains(string(b), wrongPassword)) {
				t.Errorf("a password shows in %s", path)
			}
			return nil
		})
	}
}

// Submission on port 587's setup: STARTTLS, AUTH. A wrong password is a
// temporary failure: the mail is queued, `qbox queue show` says why,
// nothing bounces; once the netrc holds the right password `sendmail -q`
// delivers it. No password appears in any output or queue file.
func TestSubmissionWrongPasswordThenFixed(t *testing.T) {
	pf, caFile := submissionPeer(t)
	sendmail := testpeer.Personality(t, "sendmail")
	qbox := testpeer.Binary(t)
	token := testpeer.Token(t)
	env, spoolDir := mailEnv(t, "", "QBOX_RELAYS=smtp://mailer@"+pf.SubmissionAddr+"?ca="+caFile)
	home := envValue(env, "QMAILHOME")
	writeNetrcFile(t, home, "127.0.0.4", wrongPassword)

	code, out, stderr := run(t, sendmail, env, "Subject: "+token+"\n\nbody\n", "-v", "someone@example.test")
	if code != 0 || !strings.Contains(stderr, "queued") || !strings.Contains(stderr, "535") {
		t.Fatalf("sendmail with a wrong password: exit %d, stderr %q", code, stderr)
	}
	if n := queuedFiles(t, spoolDir); n != 1 {
		t.Fatalf("%d files queued, want 1", n)
	}
	// sendmail -q keeps it (a temporary failure, no bounce) and says why.
	code, qout, qerr := run(t, sendmail, env, "", "-q", "-v")
	if n := queuedFiles(t, spoolDir); n != 1 || code != 75 {
		t.Fatalf("sendmail -q with the wrong password: exit %d, %d files queued\n%s%s", code, n, qout, qerr)
	}
	list := exec.Command(qbox, "queue", "list", "--json", "--dir", spoolDir)
	list.Env = cleanEnv(env)
	lb, err := list.Output()
	if err != nil {
		t.Fatalf("qbox queue list: %v", err)
	}
	var listing struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(lb, &listing); err != nil || len(listing.Messages) != 1 {
		t.Fatalf("qbox queue list --json: %v\n%s", err, lb)
	}
	msgs := listing.Messages
	show := exec.Command(qbox, "queue", "show", "--dir", spoolDir, msgs[0].ID)
	show.Env = cleanEnv(env)
	sb, err := show.Output()
	if err != nil || !strings.Contains(string(sb), "authentication failed") || !strings.Contains(string(sb), "535") {
		t.Fatalf("qbox queue show does not say why (%v):\n%s", err, sb)
	}
	// And the check, whatever its verdict, says why mail waits.
	check := exec.Command(qbox, "queue", "check", "--dir", spoolDir)
	check.Env = cleanEnv(env)
	cb, _ := check.Output()
	if !strings.Contains(string(cb), "last error: ") || !strings.Contains(string(cb), "authentication failed") {
		t.Fatalf("qbox queue check does not say why:\n%s", cb)
	}

	writeNetrcFile(t, home, "127.0.0.4", rightPassword)
	code, qout2, qerr2 := run(t, sendmail, env, "", "-q")
	if code != 0 {
		t.Fatalf("sendmail -q with the right password: exit %d\n%s%s", code, qout2, qerr2)
	}
	got := pf.WaitFor(t, token, 1, time.Minute)
	if !strings.Contains(string(got[0]), "with ESMTPSA") {
		t.Errorf("Postfix did not take it over TLS with AUTH (ESMTPSA):\n%s", got[0])
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Fatalf("%d files still queued", n)
	}
	noSecret(t, []string{spoolDir, filepath.Join(home, "control")}, out, stderr, qout, qerr, string(lb), string(sb), qout2, qerr2)
}

// A submission server offering AUTH LOGIN only (Postfix with Cyrus,
// which prompts "Username:" and "Password:"): sendmail authenticates
// and delivers at once, and no password appears in any output or file.
func TestSubmissionLoginOnly(t *testing.T) {
	pf, caFile := submissionPeer(t)
	sendmail := testpeer.Personality(t, "sendmail")
	token := testpeer.Token(t)
	env, spoolDir := mailEnv(t, "", "QBOX_RELAYS=smtp://mailer@"+pf.LoginOnlyAddr+"?ca="+caFile)
	home := envValue(env, "QMAILHOME")
	writeNetrcFile(t, home, "127.0.0.8", rightPassword)
	code, out, stderr := run(t, sendmail, env, "Subject: "+token+"\n\nbody\n", "someone@example.test")
	if code != 0 {
		t.Fatalf("sendmail through AUTH LOGIN: exit %d\n%s%s", code, out, stderr)
	}
	got := pf.WaitFor(t, token, 1, time.Minute)
	if !strings.Contains(string(got[0]), "with ESMTPSA") {
		t.Errorf("Postfix did not take it over TLS with AUTH (ESMTPSA):\n%s", got[0])
	}
	pf.WaitLog(t, time.Minute, "postfix/login/smtpd", "sasl_method=LOGIN", "sasl_username=mailer")
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Fatalf("%d files queued", n)
	}
	noSecret(t, []string{spoolDir, filepath.Join(home, "control")}, out, stderr)
}

// Implicit TLS (465's setup) delivers at once; a server that drops
// STARTTLS from EHLO, and one that offers no AUTH, get nothing: the mail
// is queued with the reason, never sent in plain text.
func TestSubmissionImplicitTLSAndRefusals(t *testing.T) {
	pf, caFile := submissionPeer(t)
	sendmail := testpeer.Personality(t, "sendmail")
	token := testpeer.Token(t)

	env, spoolDir := mailEnv(t, "", "QBOX_RELAYS=smtps://mailer@"+pf.SubmissionsAddr+"?ca="+caFile)
	writeNetrcFile(t, envValue(env, "QMAILHOME"), "127.0.0.5", rightPassword)
	code, out, stderr := run(t, sendmail, env, "Subject: "+token+"\n\nbody\n", "someone@example.test")
	if code != 0 || queuedFiles(t, spoolDir) != 0 {
		t.Fatalf("smtps: exit %d, stderr %q", code, stderr)
	}
	pf.WaitFor(t, token, 1, time.Minute)
	noSecret(t, []string{spoolDir}, out, stderr)

	for _, c := range []struct {
		name, addr, host, want string
	}{
		{"STARTTLS stripped", pf.StrippedAddr, "127.0.0.6", "does not offer STARTTLS"},
		{"no AUTH", pf.NoAuthAddr, "127.0.0.7", "offers no AUTH"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := testpeer.Token(t)
			env, spoolDir := mailEnv(t, "", "QBOX_RELAYS=smtp://mailer@"+c.addr+"?ca="+caFile)
			writeNetrcFile(t, envValue(env, "QMAILHOME"), c.host, rightPassword)
			code, out, stderr := run(t, sendmail, env, "Subject: "+tok+"\n\nbody\n", "-v", "someone@example.test")
			if code != 0 || !strings.Contains(stderr, c.want) || queuedFiles(t, spoolDir) != 1 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			noSecret(t, []string{spoolDir}, out, stderr)
		})
	}
}
