//go:build peers

package sendmail

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// TestQueueRunner: sendmail -q1s runs the queue every second in the
// foreground. Mail queued between three runs is delivered through
// Postfix, each message once; SIGTERM ends the runner with exit 0 and
// nothing left queued.
func TestQueueRunner(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	sendmail := testpeer.Personality(t, "sendmail")
	env, spoolDir := mailEnv(t, pf.QMQPAddr)
	sp, err := spool.Open(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sendmail, "-bd", "-q1s")
	cmd.Env = cleanEnv(env)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()

	tok := testpeer.Token(t)
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("Subject: %s-%d\n\nrun %d\n", tok, i, i)
		if _, err := sp.Enqueue(proto.Envelope{Sender: "runner@example.test", Recipients: []string{"runner@example.test"}},
			strings.NewReader(msg), int64(len(msg)), ""); err != nil {
			t.Fatal(err)
		}
		pf.WaitFor(t, fmt.Sprintf("%s-%d\n", tok, i), 1, 30*time.Second)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if code := testpeer.ExitCode(t, err); code != 0 {
			t.Fatalf("runner exit %d after SIGTERM, want 0: %s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("runner still running 60s after SIGTERM: %s", stderr.String())
	}
	if n := queuedFiles(t, spoolDir); n != 0 {
		t.Errorf("%d files still queued", n)
	}
	for i := 0; i < 3; i++ {
		if got := pf.WaitFor(t, fmt.Sprintf("%s-%d\n", tok, i), 1, time.Second); len(got) != 1 {
			t.Errorf("message %d delivered %d times", i, len(got))
		}
	}
}

// TestRunnerTakesADropAtOnceIntoPostfix: the queue runner, its next
// retry an hour away, takes a drop at once (inotify) and delivers it
// through Postfix's qmqpd; the test waits for the message in Postfix's
// sink, with a guard only.
func TestRunnerTakesADropAtOnceIntoPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	q := newSystemQueue(t)
	r := startRunner(t, systemEnv(t, q, pf.QMQPAddr), "-bd", "-q1h", "-v")
	r.waitLine(t, "waiting for a drop into "+q.DropDir())

	tok := testpeer.Token(t)
	start := time.Now()
	dropMessage(t, q, "runner@example.test", "Subject: "+tok+"\n\ntaken at once\n")
	if got := pf.WaitFor(t, tok, 1, runnerGuard); len(got) != 1 {
		t.Fatalf("delivered %d times, want once", len(got))
	}
	t.Logf("drop to Postfix: %v", time.Since(start)) // a report, not a bound
	r.stop(t)
}
