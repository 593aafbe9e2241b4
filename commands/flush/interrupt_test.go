package flush

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// fillUnique queues n messages of about 8 KiB for ppp-r<i>@remote.test,
// each with its own Message-ID, so the receiver's copies can be counted.
func fillUnique(t *testing.T, dir string, n int, token string) {
	t.Helper()
	pad := strings.Repeat("0123456789abcdef", 512)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("Message-ID: <%s.%d@example.test>\nSubject: %s %d\n\n%s\n", token, i, token, i, pad)
		enqueue(t, dir, fmt.Sprintf("1700000000.m%05d.host", i), "s@example.test", fmt.Sprintf("ppp-r%05d@remote.test", i), []byte(body), 0)
	}
}

// flushRun is one `qbox flush-maildir` running in the background.
type flushRun struct {
	cmd            *exec.Cmd
	stdout, stderr testpeer.LockedBuffer
	exited         chan error
}

func startFlush(t *testing.T, args ...string) *flushRun {
	t.Helper()
	r := &flushRun{exited: make(chan error, 1)}
	r.cmd = exec.Command(testpeer.Binary(t), append([]string{"flush-maildir"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
	})
	return r
}

// waitFor polls cond until it holds (true) or the run exits (false).
func (r *flushRun) waitFor(t *testing.T, cond func() bool) (bool, error) {
	t.Helper()
	guard := time.After(3 * time.Minute) // a guard, not a measure
	for {
		if cond() {
			return true, nil
		}
		select {
		case err := <-r.exited:
			return false, err
		case <-guard:
			t.Fatalf("neither the event nor the end of the run came\nstdout:\n%s\nstderr:\n%s", r.stdout.String(), r.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (r *flushRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-r.exited:
		return testpeer.ExitCode(t, err)
	case <-time.After(3 * time.Minute): // a guard, not a measure
		t.Fatalf("the run did not end\nstdout:\n%s\nstderr:\n%s", r.stdout.String(), r.stderr.String())
		return 0
	}
}

// notBothSides fails when a message is both stored at the receiver and
// still queued here: the next run would deliver it a second time.
func notBothSides(t *testing.T, src, dest string) {
	t.Helper()
	_, count := delivered(t, dest)
	for _, name := range remaining(t, src) {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		line := strings.SplitN(string(b), "\n", 3)[1]
		rcpt := strings.TrimPrefix(line, "Delivered-To: ppp-")
		if count[rcpt] > 0 {
			t.Errorf("%s is stored at the receiver and still queued: it would be delivered twice", rcpt)
		}
	}
}

// Ctrl-C at several points of a 3,000-message flush into `qbox serve`:
// each interrupted run exits 111 with its summary, leaves nothing queued
// that the server already has, and after a final run every message is
// stored exactly once.
func TestFlushInterruptedDeliversNothingTwice(t *testing.T) {
	const n = 3000
	addr, dest := serve(t)
	src := newMaildir(t)
	fillUnique(t, src, n, testpeer.Token(t))
	newDir := filepath.Join(dest, "new")

	interrupted := 0
	for _, target := range []int{1, 700, 1800} {
		if counting.FilesOrNone(t, newDir) >= n {
			break
		}
		run := startFlush(t, src, "ppp-", addr)
		reached, err := run.waitFor(t, func() bool { return counting.FilesOrNone(t, newDir) >= target })
		if !reached {
			t.Logf("the run ended before %d messages were stored: %v", target, err)
			notBothSides(t, src, dest)
			continue
		}
		if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Logf("the run ended before the signal: %v", err)
			run.wait(t)
			continue
		}
		code := run.wait(t)
		interrupted++
		out := run.stdout.String()
		if code != 111 {
			t.Errorf("interrupted at %d stored: exit %d, want 111\nstderr:\n%s", target, code, run.stderr.String())
		}
		if !strings.Contains(out, "summary: ") || !strings.Contains(out, "; interrupted;") {
			t.Errorf("interrupted at %d stored: no summary saying so:\n%s", target, lastLines(out, 3))
		}
		notBothSides(t, src, dest)
		t.Logf("interrupted at %d stored: %d stored, %d queued", target, counting.FilesOrNone(t, newDir), len(remaining(t, src)))
	}
	if interrupted == 0 {
		t.Fatal("no run could be interrupted")
	}

	stdout, stderr, code := runQbox(t, nil, "flush-maildir", src, "ppp-", addr)
	if code != 0 {
		t.Fatalf("final run: exit %d\n%s\nstderr:\n%s", code, lastLines(stdout, 3), stderr)
	}
	_, count := delivered(t, dest)
	for i := 0; i < n; i++ {
		rcpt := fmt.Sprintf("r%05d@remote.test", i)
		if count[rcpt] != 1 {
			t.Errorf("%s stored %d times", rcpt, count[rcpt])
		}
	}
	if len(count) != n {
		t.Errorf("%d recipients stored, want %d", len(count), n)
	}
	if left := remaining(t, src); len(left) != 0 {
		t.Errorf("%d files left in the source maildir", len(left))
	}
}

// A second signal stops at once: the run still prints its summary and
// exits 111.
func TestFlushSecondSignalStopsAtOnce(t *testing.T) {
	const n = 1500
	addr, dest := serve(t)
	src := newMaildir(t)
	fillUnique(t, src, n, testpeer.Token(t))
	newDir := filepath.Join(dest, "new")

	run := startFlush(t, src, "ppp-", addr)
	if reached, err := run.waitFor(t, func() bool { return counting.FilesOrNone(t, newDir) >= 100 }); !reached {
		t.Fatalf("the run ended before 100 messages were stored: %v\n%s", err, run.stderr.String())
	}
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The second signal only once the first has been taken (two sent
	// at once may arrive as one).
	if reached, _ := run.waitFor(t, func() bool { return strings.Contains(run.stderr.String(), "starting no new message") }); !reached {
		t.Skip("the run ended before the second signal")
	}
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Skipf("the run ended before the second signal: %v", err)
	}
	if code := run.wait(t); code != 111 {
		t.Errorf("exit %d, want 111\nstderr:\n%s", code, run.stderr.String())
	}
	if out := run.stdout.String(); !strings.Contains(out, "; interrupted;") {
		t.Errorf("no summary saying interrupted:\n%s", lastLines(out, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
