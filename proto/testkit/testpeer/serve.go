package testpeer

import (
	"bytes"
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

// Serve is a running `qbox serve` started by StartServe.
type Serve struct {
	// The addresses serve listens on, read from its "listening" log
	// lines; empty for a protocol that is off.
	QMQP, QMTP, SMTP string
	QMQPS, QMTPS     string        // --qmqps, --qmtps (TLS from the first byte)
	Maildir          string        // the --maildir argument, if any
	Log              *LockedBuffer // serve's stderr (its log), as it grows
	Cmd              *exec.Cmd
	// Exited is closed once the process has exited and its log is
	// complete; Err is then Wait's result.
	Exited chan struct{}
	Err    error
}

// ServeOptions are the rarely needed extras of StartServeWith.
type ServeOptions struct {
	Env   []string // added to serve's environment
	Shell string   // run first in a shell that then execs serve (e.g. "ulimit -n 64"); empty: no shell
}

// serveStartWithin bounds the wait for the listening lines: a guard for a
// busy machine, not a measure.
const serveStartWithin = 2 * time.Minute

// StartServe runs `qbox serve` (the binary of Binary) with args, waits
// until it logs that it listens on every address args ask for and
// returns it with the real addresses. args must give --qmqp and --qmtp
// (an address or empty), and may give --smtp; use 127.0.0.1:0 so the
// kernel picks a free port. If serve exits first, or does not listen in
// time, the test fails with serve's log. At the end of the test serve
// gets SIGTERM (then SIGKILL if it lingers) and is waited for; its log is
// printed if the test failed.
func StartServe(t testing.TB, args ...string) *Serve {
	t.Helper()
	return StartServeWith(t, ServeOptions{}, args...)
}

// StartServeWith is StartServe with options.
func StartServeWith(t testing.TB, o ServeOptions, args ...string) *Serve {
	t.Helper()
	want := map[string]bool{}
	seen := map[string]bool{}
	s := &Serve{Log: &LockedBuffer{}, Exited: make(chan struct{})}
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		switch name {
		case "qmqp", "qmtp", "smtp", "qmqps", "qmtps", "maildir":
		default:
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				t.Fatalf("StartServe: --%s without a value", name)
			}
			i++
			val = args[i]
		}
		seen[name] = true
		if name == "maildir" {
			s.Maildir = val
		} else {
			want[name] = val != ""
		}
	}
	for _, p := range []string{"qmqp", "qmtp"} {
		if !seen[p] {
			// The defaults are ports 628 and 209, which need root.
			t.Fatalf("StartServe: give --%s (127.0.0.1:0, or empty to disable it)", p)
		}
	}

	shown := false // the log is already in the failure message
	notify := make(chan struct{}, 1)
	argv := append([]string{"serve"}, args...)
	s.Cmd = exec.Command(Binary(t), argv...)
	if o.Shell != "" {
		s.Cmd = exec.Command("/bin/sh", append([]string{"-c", o.Shell + `; exec "$0" "$@"`, Binary(t)}, argv...)...)
	}
	s.Cmd.Env = append(os.Environ(), o.Env...)
	s.Cmd.Stderr = &lineNotifier{w: s.Log, notify: notify}
	s.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.Cmd.Start(); err != nil {
		t.Fatalf("starting qbox serve: %v", err)
	}
	go func() { s.Err = s.Cmd.Wait(); close(s.Exited) }()
	t.Cleanup(func() {
		s.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.Exited:
		case <-time.After(time.Minute): // longer than any --grace a test sets
		}
		// The group too: children (a --queue-program) must not outlive
		// the test.
		syscall.Kill(-s.Cmd.Process.Pid, syscall.SIGKILL)
		<-s.Exited
		if t.Failed() && !shown {
			t.Logf("qbox serve %s log:\n%s", strings.Join(args, " "), tail(s.Log.String(), 8000))
		}
	})

	deadline := time.NewTimer(serveStartWithin)
	defer deadline.Stop()
	for {
		addrs := listening(s.Log.String())
		done := true
		for p, on := range want {
			if on && addrs[p] == "" {
				done = false
			}
		}
		if done {
			s.QMQP, s.QMTP, s.SMTP = addrs["qmqp"], addrs["qmtp"], addrs["smtp"]
			s.QMQPS, s.QMTPS = addrs["qmqps"], addrs["qmtps"]
			return s
		}
		select {
		case <-notify:
		case <-s.Exited:
			shown = true
			t.Fatalf("qbox serve %s exited (%v) before listening:\n%s", strings.Join(args, " "), s.Err, s.Log.String())
		case <-deadline.C:
			shown = true
			t.Fatalf("qbox serve %s does not listen after %v:\n%s", strings.Join(args, " "), serveStartWithin, s.Log.String())
		}
	}
}

// listening reads serve's "listening" log lines: protocol to address.
func listening(log string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		kv := logfmt(line)
		if kv["msg"] == "listening" && kv["proto"] != "" {
			out[kv["proto"]] = kv["addr"]
		}
	}
	return out
}

// logfmt splits one line of slog's text handler into its keys and
// values (a quoted value is unquoted).
func logfmt(line string) map[string]string {
	kv := map[string]string{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			break
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		kv[key] = val
		line = rest
	}
	return kv
}

// lineNotifier passes writes on to w and signals notify (without
// blocking) whenever a complete line has been written.
type lineNotifier struct {
	mu     sync.Mutex
	w      *LockedBuffer
	notify chan struct{}
}

func (l *lineNotifier) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	if bytes.IndexByte(p[:n], '\n') >= 0 {
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
	return n, err
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// ClosedAddr returns a loopback address where connecting is refused: a
// port bound (so nothing else gets it) but not listening, until the test
// ends.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}

// StartPartialQMTP runs `qbox serve` with QMTP alone, storing into a new
// maildir (the Serve's Maildir) and taking mail only for the domain
// local: a recipient elsewhere gets a D per recipient, so a message to
// one of each is taken for some recipients and not others.
func StartPartialQMTP(t testing.TB, local string) *Serve {
	t.Helper()
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte(local+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "dest")
	s := StartServe(t, "--qmqp", "", "--qmtp", "127.0.0.1:0", "--maildir", dest, "--rcpthosts", rcpthosts)
	return s
}
