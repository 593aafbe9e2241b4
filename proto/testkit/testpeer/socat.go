package testpeer

import (
	"bufio"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// socatWithin bounds the wait for socat's listening line: a guard for a
// busy machine, not a measure.
const socatWithin = time.Minute

var socatListening = regexp.MustCompile(`listening on AF=\d+ (\S+)`)

// Socat runs `socat -d -d LISTEN-ADDRESS TARGET` (Debian's socat, a TLS
// wrapper for the peer tests: OPENSSL-LISTEN in front of a plaintext
// server, or TCP-LISTEN in front of OPENSSL to a TLS server), with the
// listening address on port 0 so the kernel picks it, and returns the
// address socat reports it listens on. It is stopped when the test ends.
func Socat(t testing.TB, listen, target string) string {
	t.Helper()
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat is not installed (make peers): %v", err)
	}
	cmd := exec.Command("socat", "-d", "-d", listen, target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	log := &LockedBuffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			log.Write([]byte(sc.Text() + "\n"))
			if m := socatListening.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
		}
	}()
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("socat %s %s:\n%s", listen, target, tail(log.String(), 3000))
		}
	})
	select {
	case a := <-addr:
		return a
	case <-exited:
		t.Fatalf("socat %s %s exited:\n%s", listen, target, log.String())
	case <-time.After(socatWithin):
		t.Fatalf("socat %s %s does not listen after %v", listen, target, socatWithin)
	}
	return ""
}
