//go:build peers

package testpeer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Postfix is a private Postfix instance started by the tests
// (testdata/postfix-private.sh): its own configuration, queue and data
// directories under a temporary directory, bound over /etc/postfix,
// /var/spool/postfix and /var/lib/postfix in a mount namespace of its own,
// and its own loopback ports, picked by the kernel. The host's Postfix, its
// configuration and its ports are never touched.
type Postfix struct {
	QMQPAddr string // qmqpd on 127.0.0.3; only 127.0.0.1 is an authorized client
	SMTPAddr string // smtpd on 127.0.0.1
	Domain   string // mail for any user at Domain lands in Maildir
	Maildir  string // the maildir (new/ holds delivered files)

	// The submission listeners of StartPostfixSubmission (else ""):
	// STARTTLS required with AUTH (as port 587), TLS from the first byte
	// with AUTH (as 465), AUTH offered without STARTTLS (as a STARTTLS
	// stripped by a man in the middle), STARTTLS without AUTH, and as
	// the first but offering AUTH LOGIN only.
	SubmissionAddr, SubmissionsAddr, StrippedAddr, NoAuthAddr, LoginOnlyAddr string

	dir       string // the instance's directory: etc, spool, lib, mail, logs
	masterPID int
	stdin     *os.File // closing it tells the script to stop Postfix
	stderr    *LockedBuffer
	exited    chan struct{}
	waitErr   error
	stopOnce  sync.Once
	stopErr   error
}

// postfixWithin bounds the start and the stop of an instance: a guard for
// a busy machine (post-install alone takes seconds), not a measure.
const postfixWithin = 3 * time.Minute

var (
	postfixOnce   sync.Once
	postfixShared *Postfix
	postfixErr    error
)

// StartPostfix returns this test process's private Postfix, starting it
// on the first call. It runs until the process ends: Main stops it and
// waits; without Main (or if the process is killed) it stops by itself
// when the process exits, as its starter then reads EOF. Tests share its
// mailbox, so each marks its mail with a Token. It needs root.
func StartPostfix(t testing.TB) *Postfix {
	t.Helper()
	postfixOnce.Do(func() { postfixShared, postfixErr = startPrivatePostfix() })
	if postfixErr != nil {
		t.Fatal(postfixErr)
	}
	return postfixShared
}

// StartPrivatePostfix starts a Postfix instance of the test's own,
// stopped when the test ends (or earlier by Stop).
func StartPrivatePostfix(t testing.TB) *Postfix {
	t.Helper()
	p, err := startPrivatePostfix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// Main runs a package's tests and then stops the package's shared Postfix
// (if a test started one) and waits until it is gone, so that no instance
// outlives `go test`. A package whose peer tests use StartPostfix calls it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if postfixShared != nil {
		if err := postfixShared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Submission is what StartPostfixSubmission sets up: a server
// certificate and key (PEM files, from a CA of the test's), and the SASL
// user with the password in a file.
type Submission struct {
	CertFile, KeyFile string
	User              string
	PasswordFile      string
}

// StartPostfixSubmission starts a Postfix of the test's own with the
// submission listeners (see Postfix's fields) besides smtpd and qmqpd,
// stopped when the test ends.
func StartPostfixSubmission(t testing.TB, s Submission) *Postfix {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	for src, dst := range map[string]string{s.CertFile: "cert.pem", s.KeyFile: "key.pem", s.PasswordFile: "sasl-password"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err := startPrivatePostfix("QBOX_PF_TLS_DIR="+dir, "QBOX_PF_SASL_USER="+s.User)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func startPrivatePostfix(env ...string) (*Postfix, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the Postfix peer needs root to start (run the tests as root, as CI does)")
	}
	dir, err := os.MkdirTemp("", "qbox-postfix-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(Root(), "testdata", "postfix-private.sh")
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Postfix{
		Domain:  "example.test",
		Maildir: filepath.Join(dir, "mail", "inbox"),
		dir:     dir,
		stdin:   w,
		stderr:  &LockedBuffer{},
		exited:  make(chan struct{}),
	}
	cmd := exec.Command("bash", script, dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = r
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.Close()
		w.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	// Its own process group: a Ctrl-C at the terminal reaches the test
	// process, whose exit then stops Postfix in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %v", script, err)
	}
	r.Close()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	// fail stops what may have started and returns err with the logs.
	fail := func(format string, args ...any) (*Postfix, error) {
		w.Close()
		select {
		case <-p.exited:
		case <-time.After(postfixWithin):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		err := fmt.Errorf("private Postfix in %s: %s (starter: %v)\n%s", dir, fmt.Sprintf(format, args...), p.waitErr, p.logs())
		os.RemoveAll(dir)
		return nil, err
	}
	var line string
	select {
	case line = <-ready:
	case <-time.After(postfixWithin):
		return fail("not started after %v", postfixWithin)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "master "))
	if err != nil || !strings.HasPrefix(line, "master ") {
		return fail("%s did not start it (said %q)", script, line)
	}
	p.masterPID = pid
	// The master listens before `postfix start` returns; the loop only
	// guards against reading /proc too early on a strange kernel.
	deadline := time.Now().Add(postfixWithin)
	submission := len(env) > 0
	ready2 := func() bool {
		return p.SMTPAddr != "" && p.QMQPAddr != "" &&
			(!submission || p.SubmissionAddr != "" && p.SubmissionsAddr != "" && p.StrippedAddr != "" && p.NoAuthAddr != "" && p.LoginOnlyAddr != "")
	}
	for !ready2() {
		for _, a := range procListeners(pid) {
			switch a.IP.String() {
			case "127.0.0.1":
				p.SMTPAddr = a.String()
			case "127.0.0.3":
				p.QMQPAddr = a.String()
			case "127.0.0.4":
				p.SubmissionAddr = a.String()
			case "127.0.0.5":
				p.SubmissionsAddr = a.String()
			case "127.0.0.6":
				p.StrippedAddr = a.String()
			case "127.0.0.7":
				p.NoAuthAddr = a.String()
			case "127.0.0.8":
				p.LoginOnlyAddr = a.String()
			}
		}
		if ready2() {
			break
		}
		if time.Now().After(deadline) {
			return fail("master %d does not listen on 127.0.0.1 and 127.0.0.3 after %v", pid, postfixWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// Stop stops the instance and waits until its starter has stopped
// Postfix and removed its directory. It is idempotent.
func (p *Postfix) Stop() error {
	p.stopOnce.Do(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(postfixWithin):
			p.stopErr = fmt.Errorf("private Postfix in %s: not stopped after %v\n%s", p.dir, postfixWithin, p.logs())
			return
		}
		if p.waitErr != nil {
			p.stopErr = fmt.Errorf("private Postfix in %s: stopping: %v\n%s", p.dir, p.waitErr, p.logs())
		} else if alive(p.masterPID) {
			p.stopErr = fmt.Errorf("private Postfix in %s: master %d still runs after the stop", p.dir, p.masterPID)
		}
	})
	return p.stopErr
}

// alive reports whether pid is a process that has not exited (a zombie
// has).
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !bytes.Contains(st, []byte(") Z "))
}

// logs is what the instance's starter and Postfix said, for a failure
// message: the starter's stderr and the tails of its log and of Postfix's.
func (p *Postfix) logs() string {
	var b strings.Builder
	if s := p.stderr.String(); s != "" {
		fmt.Fprintf(&b, "postfix-private.sh stderr:\n%s\n", tail(s, 4000))
	}
	for _, name := range []string{"start.log", "maillog"} {
		if data, err := os.ReadFile(filepath.Join(p.dir, name)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "%s:\n%s\n", name, tail(string(data), 4000))
		}
	}
	return b.String()
}

// WaitFor waits until n delivered files contain token and returns their
// contents. Tests share the mailbox, so each test marks its mail with a
// token of its own (see Token). On failure it shows the tail of Postfix's
// log.
func (p *Postfix) WaitFor(t testing.TB, token string, n int, within time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var found [][]byte
		for _, sub := range []string{"new", "cur"} {
			entries, _ := os.ReadDir(filepath.Join(p.Maildir, sub))
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(p.Maildir, sub, e.Name()))
				if err == nil && bytes.Contains(b, []byte(token)) {
					found = append(found, b)
				}
			}
		}
		if len(found) >= n || time.Now().After(deadline) {
			if len(found) < n {
				t.Fatalf("Postfix delivered %d messages containing %q within %v, want %d\n%s", len(found), token, within, n, p.logs())
			}
			return found
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLog waits until the instance's log (maillog) holds a line with
// every one of subs and returns that line; within is a guard, not a
// measure (Postfix's log daemon writes a moment after the event).
func (p *Postfix) WaitLog(t testing.TB, within time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		data, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
		for _, line := range strings.Split(string(data), "\n") {
			all := true
			for _, sub := range subs {
				all = all && strings.Contains(line, sub)
			}
			if all {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix logged no line with %q within %v\n%s", subs, within, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitDrained waits until no file in the instance's queue (maildrop,
// incoming, active, deferred, hold: scanned in the order a message moves
// through them) contains token: every message Postfix accepted with it has
// then been delivered or dropped, so no further delivery of it can come.
// A test that counts deliveries after its client had every reply calls it
// before counting. within is a guard, not a measure.
func (p *Postfix) WaitDrained(t testing.TB, token string, within time.Duration) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(p.dir, "spool", "incoming")); err != nil {
		t.Fatalf("Postfix's queue: %v", err) // else the scan below would see nothing
	}
	deadline := time.Now().Add(within)
	for {
		var held []string
		for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
			filepath.WalkDir(filepath.Join(p.dir, "spool", q), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(token)) {
					held = append(held, path)
				}
				return nil
			})
		}
		if len(held) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix's queue still holds %v with %q after %v\n%s", held, token, within, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
