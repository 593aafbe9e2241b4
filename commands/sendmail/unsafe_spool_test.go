package sendmail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

// A spool another user could change is refused: sendmail exits 75 and
// qmail-inject 111, saying which directory and why, and nothing is
// reported as queued or written there; sendmail -q refuses to flush it.
// (A spool owned by another user needs root: unsafe_spool_peers_test.go.)
func TestUnsafeSpoolRefused(t *testing.T) {
	type spoiled struct {
		name, problem string
		make          func(t *testing.T) (dir, contents string)
	}
	cases := []spoiled{
		{"world-writable", "writable by group or others", func(t *testing.T) (string, string) {
			dir := filepath.Join(t.TempDir(), "spool")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return dir, dir
		}},
		{"symlink", "symbolic link", func(t *testing.T) (string, string) {
			real := filepath.Join(t.TempDir(), "real")
			if err := os.Mkdir(real, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(t.TempDir(), "spool")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link, real
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, contents := tc.make(t)
			checkUnsafeSpool(t, dir, contents, tc.problem)
		})
	}
}

// checkUnsafeSpool runs sendmail, qmail-inject, sendmail -q and mailq on
// the spool dir (its files in contents), which is unsafe for problem.
func checkUnsafeSpool(t *testing.T, dir, contents, problem string) {
	sendmail := testpeer.Personality(t, "sendmail")
	inject := testpeer.Personality(t, "qmail-inject")
	mailq := testpeer.Personality(t, "mailq")
	t.Helper()
	env, _ := mailEnv(t, testpeer.ClosedAddr(t))
	env = append(env, "QBOX_SPOOL="+dir)
	for _, p := range []struct {
		prog string
		code int
	}{{sendmail, 75}, {inject, 111}} {
		code, _, stderr := run(t, p.prog, env, "Subject: x\n\nx\n", "someone@example.test")
		if code != p.code || !strings.Contains(stderr, dir) || !strings.Contains(stderr, problem) || strings.Contains(stderr, "queued in") {
			t.Errorf("%s: exit %d, stderr %q; want %d naming %s and %q", filepath.Base(p.prog), code, stderr, p.code, dir, problem)
		}
	}
	if err := os.MkdirAll(filepath.Join(contents, "new"), 0o700); err == nil {
		// A spool that looks like it has mail: -q must not touch it.
		code, _, stderr := run(t, sendmail, env, "", "-q")
		if code != 75 || !strings.Contains(stderr, problem) {
			t.Errorf("sendmail -q: exit %d, stderr %q; want 75 and %q", code, stderr, problem)
		}
		code, out, stderr := run(t, mailq, env, "")
		if code != 0 || !strings.Contains(stderr, problem) {
			t.Errorf("mailq: exit %d, stdout %q, stderr %q; want 0 and %q", code, out, stderr, problem)
		}
	}
	filepath.Walk(contents, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			t.Errorf("file %s written into the refused spool", p)
		}
		return nil
	})
}
