//go:build peers

package testpeer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require returns the path of an installed program, failing the test with
// the package to install when it is missing.
func Require(t testing.TB, prog, pkg string) string {
	t.Helper()
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/lib/postfix/sbin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, prog)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	t.Fatalf("%s not found: install the Debian package %s (make peers does)", prog, pkg)
	return ""
}

// RequireRoot fails the test when it does not run as root: a peers-tagged
// test never skips (make test runs as root, as CI does, and a skipped test
// would report untested code as passing). why says what root is needed for.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("needs root %s: run make test as root, as CI does", why)
	}
}

// Start starts a long-running peer process, kills it (and its children)
// when the test ends, and returns the command.
func Start(t testing.TB, env []string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", argv[0], err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("%s stderr:\n%s", argv[0], stderr.String())
		}
	})
	return cmd
}

// QmqpSink starts Postfix's qmqp-sink (answers K, discards) and returns its
// address.
func QmqpSink(t testing.TB) string {
	t.Helper()
	sink := Require(t, "qmqp-sink", "postfix")
	cmd := Start(t, nil, sink, "inet:127.0.0.1:0", "1024")
	return "127.0.0.1:" + strconv.Itoa(listeningPort(t, cmd, 2*time.Minute))
}

// TCPServer runs prog under ucspi-tcp's tcpserver on 127.0.0.1 and returns
// the address. env is added to prog's environment.
func TCPServer(t testing.TB, env []string, prog ...string) string {
	t.Helper()
	ts := Require(t, "tcpserver", "ucspi-tcp")
	argv := append([]string{ts, "-R", "-H", "-c", "200", "127.0.0.1", "0"}, prog...)
	cmd := Start(t, env, argv...)
	return "127.0.0.1:" + strconv.Itoa(listeningPort(t, cmd, 2*time.Minute))
}

// listeningPort waits until the process cmd started (a peer told to listen
// on 127.0.0.1:0) has a TCP socket in the LISTEN state, and returns its
// port, read from /proc: the port the kernel chose, never a guessed one.
// The wait is bounded by within (a guard, not a measure); the test fails if
// the process exits first.
func listeningPort(t testing.TB, cmd *exec.Cmd, within time.Duration) int {
	t.Helper()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(within)
	for {
		if port, ok := procListening(pid); ok {
			return port
		}
		// The process is gone, or a zombie: it will never listen.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || bytes.Contains(st, []byte(") Z ")) {
			t.Fatalf("%s exited before listening", cmd.Path)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen after %v", cmd.Path, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procListening finds a listening IPv4 TCP socket among pid's open files.
func procListening(pid int) (int, bool) {
	l := procListeners(pid)
	if len(l) == 0 {
		return 0, false
	}
	return l[0].Port, true
}

// procListeners lists the listening IPv4 TCP sockets among pid's open
// files, with their local addresses, in the order of /proc/PID/net/tcp.
func procListeners(pid int) []*net.TCPAddr {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil
	}
	var out []*net.TCPAddr
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st ... uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
			continue
		}
		// The address is the kernel's 32-bit word in host byte order.
		hexIP, hexPort, _ := strings.Cut(f[1], ":")
		ip, err1 := strconv.ParseUint(hexIP, 16, 32)
		port, err2 := strconv.ParseUint(hexPort, 16, 16)
		if err1 != nil || err2 != nil {
			continue
		}
		a := &net.TCPAddr{IP: make(net.IP, 4), Port: int(port)}
		binary.NativeEndian.PutUint32(a.IP, uint32(ip))
		out = append(out, a)
	}
	return out
}

// Mailfront runs mailfront's qmqpfront-echo or qmtpfront-echo (proto is
// "qmqp" or "qmtp") under tcpserver with the accept plugin and returns its
// address. The echo back end writes what it receives to its stderr.
func Mailfront(t testing.TB, proto string) string {
	t.Helper()
	prog := Require(t, proto+"front-echo", "mailfront")
	return TCPServer(t, []string{"PLUGINS=accept"}, prog)
}
