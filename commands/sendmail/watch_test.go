package sendmail

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/maildirtest"
	"qbox/proto/testkit/testpeer"
)

// runnerGuard bounds every wait of the runner tests: a guard for a busy
// machine, never a measure.
const runnerGuard = 2 * time.Minute

// newSystemQueue lays out a system queue under a test directory as make
// install does (maildrop root's, mode 1733).
func newSystemQueue(t *testing.T) spool.SystemQueue {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a system queue (its maildrop is root's): run the tests as root, as CI does")
	}
	q := spool.SystemQueue{Root: filepath.Join(t.TempDir(), "qbox")}
	if err := q.Create(); err != nil {
		t.Fatal(err)
	}
	return q
}

// runner is a running `sendmail -bd -q1h -v`: root's queue runner of a
// system queue. Its stderr lines arrive on lines.
type runner struct {
	cmd    *exec.Cmd
	lines  chan string
	log    testpeer.LockedBuffer
	exited chan error
}

func startRunner(t *testing.T, env []string, args ...string) *runner {
	t.Helper()
	r := &runner{lines: make(chan string, 1000), exited: make(chan error, 1)}
	r.cmd = exec.Command(testpeer.Personality(t, "sendmail"), args...)
	r.cmd.Env = env
	pipe, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout = &r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			fmt.Fprintln(&r.log, sc.Text())
			select {
			case r.lines <- sc.Text():
			default: // nobody waits for so many
			}
		}
	}()
	go func() { <-read; r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("runner's output:\n%s", r.log.String())
		}
	})
	return r
}

// waitLine waits for a line of the runner's that contains s.
func (r *runner) waitLine(t *testing.T, s string) {
	t.Helper()
	guard := time.After(runnerGuard)
	for {
		select {
		case line := <-r.lines:
			if strings.Contains(line, s) {
				return
			}
		case err := <-r.exited:
			t.Fatalf("the runner exited (%v) before saying %q", err, s)
		case <-guard:
			t.Fatalf("the runner did not say %q within %v", s, runnerGuard)
		}
	}
}

// stop sends SIGTERM and wants exit 0.
func (r *runner) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.exited:
		if code := testpeer.ExitCode(t, err); code != 0 {
			t.Errorf("runner exit %d after SIGTERM, want 0", code)
		}
	case <-time.After(runnerGuard):
		t.Fatal("the runner still runs after SIGTERM")
	}
}

// dropMessage leaves a message in the maildrop as a user's sendmail does
// when the hub does not answer.
func dropMessage(t *testing.T, q spool.SystemQueue, rcpt, text string) {
	t.Helper()
	if _, err := spool.Drop(q.DropDir(), proto.Envelope{Sender: "user@example.test", Recipients: []string{rcpt}},
		strings.NewReader(text), int64(len(text)), "hub down"); err != nil {
		t.Fatal(err)
	}
}

// systemEnv is root's environment for a system queue q and the QMQP
// server at servers.
func systemEnv(t *testing.T, q spool.SystemQueue, servers string) []string {
	return cleanEnv([]string{"QBOX_SYSTEM_QUEUE=" + q.Root, "QMAILHOME=" + t.TempDir(), "QMQPSERVERS=" + servers,
		"QMAILDEFAULTHOST=example.test", "QMAILDEFAULTDOMAIN=example.test", "USER=root"})
}

// TestRunnerTakesADropAtOnce: `sendmail -bd -q1h`, whose next retry is an
// hour away, takes a drop that arrives in the maildrop at once (inotify)
// and delivers it to qbox serve; the wait is on the runner's own report of
// the round and on the stored message, with a guard only. The pickup and
// the delivery are stamped in the queue for qbox queue check.
func TestRunnerTakesADropAtOnce(t *testing.T) {
	q := newSystemQueue(t)
	dest := filepath.Join(t.TempDir(), "dest")
	s := testpeer.StartServe(t, "--qmqp", "127.0.0.1:0", "--qmtp", "", "--maildir", dest)
	r := startRunner(t, systemEnv(t, q, s.QMQP), "-bd", "-q1h", "-v")
	waiting := "waiting for a drop into " + q.DropDir() + "; the next retry in "
	r.waitLine(t, waiting+"1h")

	start := time.Now()
	dropMessage(t, q, "drop@example.test", "Subject: at once\n\ntaken at once\n")
	r.waitLine(t, waiting) // the round the drop woke is over
	took := time.Since(start)
	if got := maildirtest.Recipients(t, dest); got["drop@example.test"] != 1 {
		t.Fatalf("stored: %v; want the drop once", got)
	}
	t.Logf("drop to stored: %v", took) // a report, not a bound: the machine may be busy
	if n := spool.DropsWaiting(q); n != 0 {
		t.Errorf("%d drop(s) still in the maildrop", n)
	}
	sp := &spool.Spool{Dir: q.QueueDir()}
	for _, st := range []spool.Stamp{spool.StampPickup, spool.StampDelivery} {
		if when, err := sp.LastStamp(st); err != nil || when.Before(start.Add(-time.Second)) {
			t.Errorf("the %s stamp is %v, %v; want the round's time", st, when, err)
		}
	}
	r.stop(t)
}
