package inject

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto/testkit/testpeer"
)

// scripted is a tiny QMQP server written for a test: it reads one whole
// package, records it, and answers with exactly the bytes it was given
// (which may be malformed on purpose), or closes without a word.
type scripted struct {
	addr     string
	conns    atomic.Int32
	mu       sync.Mutex
	packages [][]byte
}

const closeAtOnce = "\x00close" // reply: close right after accepting

func startScripted(t *testing.T, reply string) *scripted {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{addr: l.Addr().String()}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go s.serve(c, reply)
		}
	}()
	return s
}

func (s *scripted) serve(c net.Conn, reply string) {
	defer c.Close()
	if reply == closeAtOnce {
		return
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := netstring.NewReader(c)
	b, err := r.Next(2 << 30)
	if err != nil {
		return
	}
	pkg, err := io.ReadAll(b)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.packages = append(s.packages, pkg)
	s.mu.Unlock()
	c.Write([]byte(reply))
}

// received returns the message, sender and recipients of the n-th package.
func (s *scripted) received(t *testing.T, n int) (msg []byte, sender string, rcpts []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.packages) <= n {
		t.Fatalf("server got %d packages, want more than %d", len(s.packages), n)
	}
	r := netstring.NewReader(bytes.NewReader(s.packages[n]))
	msg, err := r.ReadBytes(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := r.ReadBytes(1000)
	if err != nil {
		t.Fatal(err)
	}
	for {
		rb, err := r.ReadBytes(1000)
		if errors.Is(err, netstring.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rcpts = append(rcpts, string(rb))
	}
	return msg, string(sb), rcpts
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	return testpeer.ClosedAddr(t)
}

// timeoutAddr returns a loopback address whose accept queue is full, so a
// new connection attempt hangs until the client's connect timeout.
func timeoutAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue until a connection attempt no longer completes.
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the accept queue of a backlog-0 listener")
	return ""
}

// baseEnv is a clean environment: no QMQP servers and no qmail control
// files unless the test adds them, and a fixed user.
func baseEnv(t *testing.T) (env []string, qmailHome string) {
	t.Helper()
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, "control"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "QMAIL") || strings.HasPrefix(k, "MAIL") || k == "QMQPSERVERS" ||
			k == "USER" || k == "LOGNAME" || k == "NAME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "QMAILHOME="+home, "USER=tester", "QMAILHOST=example.test", "QMAILDEFAULTHOST=example.test"), home
}

// run runs the qbox binary (or a personality link) and returns its exit
// status and stderr. stdin may be nil, a string, or an *os.File.
func run(t *testing.T, prog string, env []string, stdin any, extra func(*exec.Cmd), args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = env
	switch in := stdin.(type) {
	case string:
		cmd.Stdin = strings.NewReader(in)
	case *os.File:
		cmd.Stdin = in
	case io.Reader:
		cmd.Stdin = in
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if extra != nil {
		extra(cmd)
	}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", prog, err)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("%s %v did not finish within 2 minutes", prog, args)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func inject(t *testing.T, env []string, stdin any, args ...string) (int, string) {
	t.Helper()
	return run(t, testpeer.Binary(t), env, stdin, nil, append([]string{"inject"}, args...)...)
}

func writeFile(t *testing.T, name string, b []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
