//go:build peers

package serve_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// qmqp-source's message for a given -l: the reference every stored copy
// is compared with.
func qmqpSourceReference(t *testing.T, length string) []byte {
	return captureQMQP(t, func(addr string) {
		runQmqpSource(t, "-m", "1", "-l", length, "-f", "src@example.test", "-t", "rcpt@example.test", addr)
	})
}

func TestQmqpSourceOneSession(t *testing.T) {
	ref := qmqpSourceReference(t, "2000")
	dir := filepath.Join(t.TempDir(), "Maildir") // created by serve
	s := startServe(t, "--maildir", dir)
	runQmqpSource(t, "-s", "1", "-m", "50", "-l", "2000", "-f", "src@example.test", "-t", "rcpt@example.test", s.qmqp)
	checkQmqpSourceFiles(t, readMaildir(t, dir), ref, 50, func(r string) bool { return r == "rcpt@example.test" })
	if n := counting.Files(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Errorf("%d files left in tmp/", n)
	}
	// One line per message, which is also the connection's; a line may
	// follow the reply qmqp-source read, so wait for them (bounded).
	for _, line := range []string{`msg="qmqp message" proto=QMQP remote=127.0.0.1 sender=src@example.test recipients=1 to=rcpt@example.test size=`} {
		waitLogFor(t, s, 10*time.Second, func(log string) bool { return strings.Count(log, line) >= 50 })
		if got := strings.Count(s.log.String(), line); got != 50 {
			t.Errorf("%d log lines %q, want 50", got, line)
		}
	}
	if n := strings.Count(s.log.String(), "msg=connection proto=QMQP"); n != 0 {
		t.Errorf("%d connection lines beside the message lines:\n%s", n, s.log.String())
	}
}

func TestQmqpSourceTwentySessions(t *testing.T) {
	ref := qmqpSourceReference(t, "2000")
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	// qmqp-source stops with an error at the first reply that is not K,
	// so its success means 5000 K's.
	runQmqpSource(t, "-s", "20", "-m", "5000", "-l", "2000", "-f", "src@example.test", "-t", "rcpt@example.test", s.qmqp)
	checkQmqpSourceFiles(t, readMaildir(t, dir), ref, 5000, func(r string) bool { return r == "rcpt@example.test" })
}

// Issue 25: a burst of 500 qmqp-source clients at once into serve's
// defaults (200 sessions, a waiting room of 1,000): the 300 beyond the
// slots wait their turn and every message gets K; none is refused.
func TestQmqpSourceBurst(t *testing.T) {
	ref := qmqpSourceReference(t, "2000")
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	runQmqpSource(t, "-s", "500", "-m", "2000", "-l", "2000", "-f", "src@example.test", "-t", "rcpt@example.test", s.qmqp)
	checkQmqpSourceFiles(t, readMaildir(t, dir), ref, 2000, func(r string) bool { return r == "rcpt@example.test" })
	if strings.Contains(s.log.String(), "too many connections") {
		t.Fatalf("serve refused a connection:\n%s", tail(s.log.String(), 3000))
	}
}

func TestQmqpSourceThousandRecipients(t *testing.T) {
	ref := qmqpSourceReference(t, "5000")
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	runQmqpSource(t, "-m", "1", "-r", "1000", "-l", "5000", "-f", "src@example.test", "-t", "rcpt@example.test", s.qmqp)
	seen := map[string]bool{}
	files := readMaildir(t, dir)
	checkQmqpSourceFiles(t, files, ref, 1000, func(r string) bool {
		n, ok := strings.CutSuffix(r, "rcpt@example.test")
		i, err := strconv.Atoi(n)
		return ok && err == nil && i >= 0 && i < 1000
	})
	for _, f := range files {
		seen[f.recipient] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct recipients, want 1000", len(seen))
	}
}

func TestStdioUnderTCPServer(t *testing.T) {
	dir := t.TempDir()
	bin := testpeer.Binary(t)
	for _, p := range []string{"qmqp", "qmtp"} {
		t.Run(p, func(t *testing.T) {
			// tcpserver -l names the local host (TCPLOCALHOST), which
			// serve must put in the Received line.
			addr := tcpServer(t, nil, []string{"-R", "-H", "-l", "mx.example.test", "-c", "50"},
				bin, "serve", "--stdio", p, "--maildir", dir)
			msg := []byte("Subject: via tcpserver " + p + "\n\nhello\n")
			if p == "qmqp" {
				ref := qmqpSourceReference(t, "300")
				runQmqpSource(t, "-s", "2", "-m", "6", "-l", "300", "-f", "src@example.test", "-t", "rcpt@example.test", addr)
				var got []stored
				for _, f := range readMaildir(t, dir) {
					if strings.Contains(f.received, "with QMQP") {
						got = append(got, f)
					}
				}
				checkQmqpSourceFiles(t, got, ref, 6, func(r string) bool { return r == "rcpt@example.test" })
				mustK(t, addr, proto.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}, msg)
			} else {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write(append(qmtpPackage(msg, true, "a@b", "c@d", "e@f"), qmtpPackage(msg, false, "a@b", "g@h")...))
				replies, err := readReplies(c, 3, 20*time.Second)
				if err != nil || replies[0].Status != proto.OK || replies[1].Status != proto.OK || replies[2].Status != proto.OK {
					t.Fatalf("replies %s, %v", fmtReplies(replies), err)
				}
				c.Close()
			}
			var found int
			for _, f := range readMaildir(t, dir) {
				if bytes.Equal(f.message, msg) {
					found++
					want := "Received: from unknown (127.0.0.1) by mx.example.test with " + strings.ToUpper(p) + "; "
					if !strings.HasPrefix(f.received, want) {
						t.Errorf("Received line %q, want prefix %q (peer from tcpserver's environment)", f.received, want)
					}
				}
			}
			if want := map[string]int{"qmqp": 1, "qmtp": 3}[p]; found != want {
				t.Fatalf("%d files with the message, want %d", found, want)
			}
		})
	}
}

// The store on a 1 MiB tmpfs: Z when it is full, never K; nothing partial
// in new/; every K'd message complete.
func TestDiskFull(t *testing.T) {
	fs := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (needs root, as CI runs): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })
	dir := filepath.Join(fs, "Maildir")
	s := startServe(t, "--maildir", dir, "--max-size", "4M")
	var ks, zs int
	send := func(size int, rcpts int) {
		msg := append([]byte("Subject: fill "+strconv.Itoa(ks+zs)+"\n\n"), bytes.Repeat([]byte("0123456789abcde\n"), size/16)...)
		env := proto.Envelope{Sender: "a@b"}
		for i := range rcpts {
			env.Recipients = append(env.Recipients, "r"+strconv.Itoa(i)+"@x")
		}
		r, err := sendQMQP(t, s.qmqp, env, msg)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		switch r.Status {
		case proto.OK:
			ks += rcpts
		case proto.Temporary:
			zs++
		default:
			t.Fatalf("reply %q, want K or Z", r.String())
		}
		files := readMaildir(t, dir)
		if len(files) != ks {
			t.Fatalf("%d files in new/ after %d K'd copies (reply %q)", len(files), ks, r.String())
		}
		for _, f := range files {
			if f.wholeLength < 100 || !bytes.HasSuffix(f.message, []byte("0123456789abcde\n")) {
				t.Fatalf("%s is not complete", f.name)
			}
		}
	}
	for range 5 {
		send(300<<10, 1)
	}
	send(2<<20, 1)   // larger than the file system
	send(30<<10, 60) // small, but 60 copies do not fit
	if zs < 3 {
		t.Fatalf("%d Z replies on a full disk, want at least 3", zs)
	}
	if n := counting.Files(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Errorf("%d files left in tmp/", n)
	}
	if !waitLog(t, s, "no space left on device") {
		t.Errorf("the log does not say the disk is full")
	}
}

// systemd socket activation, with systemd's own tool passing the sockets.
func TestSocketActivation(t *testing.T) {
	dir := t.TempDir()
	addrs := socketActivate(t, []string{"qmqp", "qmtp"}, testpeer.Binary(t), "serve", "--maildir", dir)
	qmqpAddr, qmtpAddr := addrs[0], addrs[1]
	msg := []byte("Subject: activated\n\nx\n")
	mustK(t, qmqpAddr, proto.Envelope{Sender: "a@b", Recipients: []string{"q@x"}}, msg)
	c, err := net.Dial("tcp", qmtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(qmtpPackage(msg, false, "a@b", "t@x"))
	if r, err := readReplies(c, 1, 20*time.Second); err != nil || r[0].Status != proto.OK {
		t.Fatalf("QMTP on the activated socket: %s %v", fmtReplies(r), err)
	}
	got := map[string]string{}
	for _, f := range readMaildir(t, dir) {
		got[f.recipient] = f.received
	}
	if !strings.Contains(got["q@x"], "with QMQP") || !strings.Contains(got["t@x"], "with QMTP") {
		t.Fatalf("files %v: each socket must speak its named protocol", got)
	}
}

func runQmqpSource(t testing.TB, args ...string) {
	t.Helper()
	src := testpeer.Require(t, "qmqp-source", "postfix")
	cmd := exec.Command(src, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qmqp-source %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func checkQmqpSourceFiles(t *testing.T, files []stored, ref []byte, want int, rcpt func(string) bool) {
	t.Helper()
	if len(files) != want {
		t.Fatalf("%d files in new/, want %d (one per K and recipient)", len(files), want)
	}
	refNoDate := withoutDate(ref)
	for _, f := range files {
		if f.sender != "src@example.test" || !rcpt(f.recipient) {
			t.Fatalf("%s: envelope <%s> -> %s", f.name, f.sender, f.recipient)
		}
		if !strings.Contains(f.received, " (127.0.0.1) by ") || !strings.Contains(f.received, " with QMQP; ") {
			t.Fatalf("%s: Received line %q", f.name, f.received)
		}
		if !bytes.Equal(withoutDate(f.message), refNoDate) {
			t.Fatalf("%s: stored message differs from what qmqp-source sends:\n%q\nwant\n%q", f.name, f.message, ref)
		}
	}
}

// tcpServer runs tcpserver on 127.0.0.1 port 0 (opts before the address,
// prog after it) and returns the address it listens on: -1 makes it print
// its port once it listens.
func tcpServer(t *testing.T, env []string, opts []string, prog ...string) string {
	t.Helper()
	ts := testpeer.Require(t, "tcpserver", "ucspi-tcp")
	argv := append(append(append([]string{"-1"}, opts...), "127.0.0.1", "0"), prog...)
	cmd := exec.Command(ts, argv...)
	cmd.Env = append(os.Environ(), env...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("tcpserver stderr:\n%s", stderr.String())
		}
	})
	port, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("tcpserver -1 printed no port: %v\n%s", err, stderr.String())
	}
	return net.JoinHostPort("127.0.0.1", strings.TrimSpace(port))
}

// socketActivate listens on 127.0.0.1:0 once per name and runs prog under
// systemd-socket-activate, which passes the sockets through to it (with
// LISTEN_PID set to its own pid by the shell that execs it) named names.
// It returns the addresses, in order.
func socketActivate(t *testing.T, names []string, prog ...string) []string {
	t.Helper()
	activate := testpeer.Require(t, "systemd-socket-activate", "systemd")
	var files []*os.File
	var addrs []string
	for range names {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close() // f holds the listening socket
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		addrs = append(addrs, l.Addr().String())
	}
	script := `LISTEN_PID=$$ LISTEN_FDS=` + strconv.Itoa(len(names)) + ` exec "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh", activate, "--fdname=" + strings.Join(names, ":")}, prog...)...)
	cmd.ExtraFiles = files
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("systemd-socket-activate stderr:\n%s", stderr.String())
		}
	})
	return addrs
}

// $RELAYCLIENT from tcpserver lets a --stdio QMTP client past
// --rcpthosts; without it the recipient outside the list gets D.
func TestQMTPRcptHostsRelayClientUnderTCPServer(t *testing.T) {
	hosts := writeRcptHosts(t, "example.org", ".example.net")
	for _, relay := range []bool{false, true} {
		dir := t.TempDir()
		var env []string
		if relay {
			env = append(env, "RELAYCLIENT=")
		}
		addr := tcpServer(t, env, []string{"-R", "-H"},
			testpeer.Binary(t), "serve", "--stdio", "qmtp", "--maildir", dir, "--rcpthosts", hosts)
		r := sendToThree(t, addr)
		if want := map[bool]proto.Status{false: proto.Permanent, true: proto.OK}[relay]; r[1].Status != want {
			t.Fatalf("RELAYCLIENT set %v: out-of-list recipient got %s", relay, r[1].String())
		}
	}
}

// Postfix's qmqp-source with an address holding LF or CR: D, nothing
// stored. (It cannot send an empty recipient: it aborts.)
func TestHostileEnvelopeRefusedQmqpSource(t *testing.T) {
	src := testpeer.Require(t, "qmqp-source", "postfix")
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	for _, to := range []string{"root@x.test\nX: y", "a\rb@x.test"} {
		out, err := exec.Command(src, "-m", "1", "-s", "1", "-f", "a@example.test", "-t", to, s.qmqp).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "can't accept addresses like that") {
			t.Fatalf("qmqp-source -t %q: %v\n%s", to, err, out)
		}
	}
	checkStored(t, dir, 0)
}

// captureQMQP accepts one QMQP connection, answers K and returns the
// message it carried: what a real client sent, byte for byte.
func captureQMQP(t testing.TB, run func(addr string)) []byte {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		outer, err := netstring.NewReader(br).Next(1 << 30)
		if err != nil {
			got <- nil
			return
		}
		msg, err := netstring.NewReader(outer).ReadBytes(1 << 30)
		if err != nil {
			got <- nil
			return
		}
		io.Copy(io.Discard, outer)
		c.Write(netstring.AppendString(nil, "Kcaptured"))
		got <- msg
	}()
	run(l.Addr().String())
	select {
	case m := <-got:
		if m == nil {
			t.Fatal("capture: no well-formed QMQP package")
		}
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("capture: no connection")
	}
	return nil
}

// withoutDate drops the Date: and Message-Id: header lines, the only
// parts of a qmqp-source message that differ between runs (the time, and
// qmqp-source's process id).
func withoutDate(msg []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(msg, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("Date: ")) && !bytes.HasPrefix(line, []byte("Message-Id: ")) {
			out = append(out, line...)
		}
	}
	return out
}
