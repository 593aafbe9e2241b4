package serve_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/netstring"
	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
)

// A scripted QMTP conversation: the files land, one per recipient, with
// CR LF converted in encoding #1 and kept in encoding #2.
func TestQMTPConversationStores(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)
	c, err := net.Dial("tcp", s.qmtp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lfMsg := []byte("Subject: lf\n\nkept \r\n as sent\n")
	crMsg := []byte("Subject: cr\n\nconverted\nlines\n")
	var wire []byte
	wire = append(wire, qmtpPackage(lfMsg, false, "a@example.test", "x@example.test", "y@example.test", "x@example.test")...)
	wire = append(wire, qmtpPackage(crMsg, true, "", "z@example.test")...)
	if _, err := c.Write(wire); err != nil { // both pipelined at once
		t.Fatal(err)
	}
	replies, err := readReplies(c, 4, 20*time.Second)
	if err != nil || len(replies) != 4 {
		t.Fatalf("replies %s, %v", fmtReplies(replies), err)
	}
	for _, r := range replies {
		if r.Status != proto.OK {
			t.Fatalf("replies %s, want 4 K", fmtReplies(replies))
		}
	}
	c.(*net.TCPConn).CloseWrite()
	files := readMaildir(t, dir)
	if len(files) != 4 {
		t.Fatalf("%d files, want 4", len(files))
	}
	byRcpt := map[string][]stored{}
	for _, f := range files {
		byRcpt[f.recipient] = append(byRcpt[f.recipient], f)
		if !strings.Contains(f.received, " with QMTP; ") {
			t.Errorf("Received line %q", f.received)
		}
	}
	if len(byRcpt["x@example.test"]) != 2 || len(byRcpt["y@example.test"]) != 1 || len(byRcpt["z@example.test"]) != 1 {
		t.Fatalf("recipients %v", byRcpt)
	}
	for _, f := range append(byRcpt["x@example.test"], byRcpt["y@example.test"]...) {
		if f.sender != "a@example.test" || !bytes.Equal(f.message, lfMsg) {
			t.Errorf("LF-mode file: <%s> %q", f.sender, f.message)
		}
	}
	if z := byRcpt["z@example.test"][0]; z.sender != "" || !bytes.Equal(z.message, crMsg) {
		t.Errorf("CR-mode file: <%s> %q, want %q", z.sender, z.message, crMsg)
	}
	// One log line per package, with the envelope, never the body.
	if !waitLog(t, s, `proto=QMTP remote=127.0.0.1 sender=a@example.test recipients=3 to=x@example.test,y@example.test,x@example.test size=`,
		`sender="" recipients=1 to=z@example.test`) {
		t.Errorf("log lacks the envelopes:\n%s", s.log.String())
	}
	if strings.Contains(s.log.String(), "kept") {
		t.Errorf("log holds message text:\n%s", s.log.String())
	}
}

// Bad input: each case gets a clear reply or a close, nothing is stored,
// and a good client is served right after.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--timeout", "2s", "--session-limit", "4s", "--max-conns", "20",
		"--max-size", "1M")
	good := 0
	goodClient := func(t *testing.T) {
		t.Helper()
		msg := []byte("Subject: good " + strconv.Itoa(good) + "\n\nstill served\n")
		mustK(t, s.qmqp, proto.Envelope{Sender: "good@example.test", Recipients: []string{"r@example.test"}}, msg)
		good++
		if n := len(readMaildir(t, dir)); n != good {
			t.Fatalf("%d files in new/ after %d good messages", n, good)
		}
	}
	goodClient(t)

	type outcome int
	const (
		closeOrReply outcome = iota // a close, or a reply that is not K
		wantD
		wantZorClose
	)
	qmqpPkg := func(msg, sender string, rcpts ...string) string {
		var items []byte
		items = netstring.AppendString(items, msg)
		items = netstring.AppendString(items, sender)
		for _, r := range rcpts {
			items = netstring.AppendString(items, r)
		}
		return string(netstring.Append(nil, items))
	}
	cases := []struct {
		name  string
		proto string // "qmqp" or "qmtp"
		send  func(c net.Conn)
		want  outcome
	}{
		{"10 GB declared", "qmqp", func(c net.Conn) { c.Write([]byte("10737418240:")) }, wantD},
		{"10 GB message inside a small package", "qmqp", func(c net.Conn) { c.Write([]byte("100:10737418240:hello")) }, closeOrReply},
		{"endless digits", "qmqp", func(c net.Conn) {
			digits := bytes.Repeat([]byte("9"), 4096)
			for range 256 { // at most 1 MiB, bounded
				if _, err := c.Write(digits); err != nil {
					return
				}
			}
		}, closeOrReply},
		{"QMTP endless digits", "qmtp", func(c net.Conn) {
			digits := bytes.Repeat([]byte("1"), 4096)
			for range 256 {
				if _, err := c.Write(digits); err != nil {
					return
				}
			}
		}, closeOrReply},
		{"slow drip", "qmqp", func(c net.Conn) {
			pkg := qmqpPkg("Subject: drip\n\nx\n", "a@b", "c@d")
			for i := 0; i < len(pkg)-1 && i < 20; i++ { // never the final byte
				if _, err := c.Write([]byte{pkg[i]}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}, closeOrReply},
		{"client gone mid-message", "qmqp", func(c net.Conn) {
			c.Write([]byte(qmqpPkg(strings.Repeat("x", 100000), "a@b", "c@d")[:50000]))
			c.Close()
		}, closeOrReply},
		{"QMTP client gone mid-message", "qmtp", func(c net.Conn) {
			c.Write(qmtpPackage(bytes.Repeat([]byte("y"), 200000), false, "a@b", "c@d")[:150000])
			c.Close()
		}, closeOrReply},
		{"leading zero", "qmqp", func(c net.Conn) { c.Write([]byte("019:5:hello,3:a@b,3:c@d,,")) }, closeOrReply},
		{"non-digit length", "qmqp", func(c net.Conn) { c.Write([]byte("1x:")) }, closeOrReply},
		{"missing comma", "qmqp", func(c net.Conn) { c.Write([]byte("18:5:hello,3:a@b,3:c@d;")) }, closeOrReply},
		{"inner item overruns outer", "qmqp", func(c net.Conn) { c.Write([]byte("12:5:hello,3:a@b,3:c@d,,")) }, closeOrReply},
		{"zero recipients", "qmqp", func(c net.Conn) { c.Write([]byte(qmqpPkg("x\n", "a@b"))) }, wantD},
		{"NUL in recipient", "qmqp", func(c net.Conn) { c.Write([]byte(qmqpPkg("x\n", "a@b", "c\x00@d"))) }, wantD},
		{"1001-byte recipient", "qmqp", func(c net.Conn) {
			c.Write([]byte(qmqpPkg("x\n", "a@b", strings.Repeat("r", 995)+"@d.com")))
		}, wantD},
		{"message over --max-size", "qmqp", func(c net.Conn) {
			c.Write([]byte(qmqpPkg(strings.Repeat("z", 1<<20+1), "a@b", "c@d")))
		}, wantD},
		{"QMTP bad first byte", "qmtp", func(c net.Conn) { c.Write([]byte("3:xyz,3:a@b,5:3:c@d,,")) }, closeOrReply},
		{"QMTP empty message", "qmtp", func(c net.Conn) { c.Write([]byte("0:,3:a@b,5:3:c@d,,")) }, closeOrReply},
		{"QMTP zero recipients", "qmtp", func(c net.Conn) { c.Write([]byte("3:\nhi,3:a@b,0:,")) }, closeOrReply},
		{"QMTP over --max-size", "qmtp", func(c net.Conn) {
			c.Write(qmtpPackage(bytes.Repeat([]byte("z"), 1<<20+1), false, "a@b", "c@d"))
		}, wantD},
		{"idle", "qmqp", func(c net.Conn) {}, closeOrReply},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := s.qmqp
			if tc.proto == "qmtp" {
				addr = s.qmtp
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			go tc.send(c)
			// The server must answer or close within its own bounds (2s
			// idle, 4s session) plus slack; never leave the client hanging.
			replies, err := readReplies(c, 1, 30*time.Second)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no reply and no close after %v", time.Since(start))
			}
			switch {
			case len(replies) == 1 && replies[0].Status == proto.OK:
				t.Fatalf("bad input got K: %q", replies[0].String())
			case tc.want == wantD && (len(replies) != 1 || replies[0].Status != proto.Permanent):
				t.Fatalf("got %s (%v), want D", fmtReplies(replies), err)
			}
			c.Close()
			// The session aborts its delivery when it sees the close.
			for deadline := time.Now().Add(30 * time.Second); counting.Files(t, filepath.Join(dir, "tmp")) != 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d files left in tmp/ 30s after the client went", counting.Files(t, filepath.Join(dir, "tmp")))
				}
			}
			goodClient(t)
		})
	}

	t.Run("1000 idle connections", func(t *testing.T) {
		conns := make([]net.Conn, 0, 1000)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 1000 {
			c, err := net.Dial("tcp", s.qmqp)
			if err != nil {
				t.Fatalf("connection %d: %v", len(conns), err)
			}
			conns = append(conns, c)
		}
		// Each is closed by the server: at once when the waiting room is
		// full, after the idle timeout otherwise.
		var wg sync.WaitGroup
		errs := make(chan error, len(conns))
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetReadDeadline(time.Now().Add(60 * time.Second))
				n, err := c.Read(make([]byte, 1))
				if n > 0 || err == nil {
					errs <- fmt.Errorf("connection %d: got data from the server", i)
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					errs <- fmt.Errorf("connection %d: still open after 60s", i)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		goodClient(t)
		if !waitLog(t, s, "too many connections") {
			t.Errorf("no log line about refused connections")
		}
	})
}

// Access control: a client outside --allow (here 127.0.0.2, the dialer
// bound to it) gets an immediate D and nothing is stored.
func TestAccessRefused(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--allow", "127.0.0.1/32")
	from := func(ip string) *net.Dialer {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	}
	for _, addr := range []string{s.qmqp, s.qmtp} {
		// Immediate: the D comes before the client sends anything.
		c, err := from("127.0.0.2").Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		replies, err := readReplies(c, 1, 10*time.Second)
		c.Close()
		if len(replies) != 1 || replies[0].Status != proto.Permanent || !strings.Contains(replies[0].Text, "not authorized") {
			t.Fatalf("%s from 127.0.0.2: %s %v, want D not authorized", addr, fmtReplies(replies), err)
		}
	}
	// A full QMQP attempt from outside: D, nothing stored.
	cl := &qmqp.Client{Servers: []string{s.qmqp}, Dial: from("127.0.0.2").DialContext}
	msg := []byte("Subject: outsider\n\nx\n")
	r, err := cl.Send(context.Background(), proto.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}, bytes.NewReader(msg), int64(len(msg)))
	if err == nil && r.Status != proto.Permanent {
		t.Fatalf("outsider got %q", r.String())
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 0 {
		t.Fatalf("%d files stored for a refused client", n)
	}
	if !waitLog(t, s, "remote=127.0.0.2", "not authorized") {
		t.Errorf("no log line naming the refused client 127.0.0.2")
	}
	// The allowed client is served.
	mustK(t, s.qmqp, proto.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}, msg)
	if n := counting.Files(t, filepath.Join(dir, "new")); n != 1 {
		t.Fatalf("%d files, want 1", n)
	}
}

func TestRefusesPublicAddressWithoutAllow(t *testing.T) {
	bin := testpeer.Binary(t)
	cmd := exec.Command(bin, "serve", "--maildir", t.TempDir(), "--qmqp", "0.0.0.0:0", "--qmtp", "")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 100 {
		t.Fatalf("exit %v, want 100\n%s", err, out)
	}
	if !strings.Contains(string(out), "--allow") || !strings.Contains(string(out), "not a loopback address") {
		t.Fatalf("the refusal does not say why:\n%s", out)
	}
	// With --allow it starts, and serves.
	s := &server{log: &lockedBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "serve", "--maildir", t.TempDir(), "--qmqp", "0.0.0.0:0", "--qmtp", "", "--allow", "127.0.0.1")
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	defer func() { s.cmd.Process.Kill(); <-s.exited }()
	_, port, _ := net.SplitHostPort(listeningAddr(t, s, "qmqp"))
	mustK(t, "127.0.0.1:"+port, proto.Envelope{Sender: "a@b", Recipients: []string{"c@d"}}, []byte("Subject: x\n\ny\n"))
}

// --queue-program: the program gets the message on fd 0 and the envelope
// on fd 1, and its exit code decides the reply.
func TestQueueProgram(t *testing.T) {
	work := t.TempDir()
	script := filepath.Join(work, "fake-qmail-queue")
	os.WriteFile(script, []byte(`#!/bin/sh
n=$(date +%s%N)
cat > "$1/msg.$n" || exit 54
cat <&1 > "$1/env.$n" || exit 54
exit $(cat "$1/code")
`), 0755)
	out := filepath.Join(work, "out")
	os.Mkdir(out, 0700)
	s := startServe(t, "--queue-program", script, "--hostname", "relay.example.test", "--", out)
	msg := []byte("Subject: handed off\n\nbody\x00\xff\n")
	for _, c := range []struct {
		code   string
		status proto.Status
	}{{"0", proto.OK}, {"31", proto.Permanent}, {"71", proto.Temporary}} {
		os.RemoveAll(out)
		os.Mkdir(out, 0700)
		os.WriteFile(filepath.Join(out, "code"), []byte(c.code), 0600)
		// QMQP
		r, err := sendQMQP(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test", "c@example.test"}}, msg)
		if err != nil || r.Status != c.status {
			t.Fatalf("exit %s: QMQP reply %q %v, want %c", c.code, r.String(), err, c.status)
		}
		// QMTP: the same verdict for every recipient.
		conn, err := net.Dial("tcp", s.qmtp)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(qmtpPackage(msg, true, "a@example.test", "d@example.test", "e@example.test"))
		replies, err := readReplies(conn, 2, 20*time.Second)
		conn.Close()
		if err != nil || replies[0].Status != c.status || replies[1].Status != c.status {
			t.Fatalf("exit %s: QMTP replies %s %v", c.code, fmtReplies(replies), err)
		}
		msgs, _ := filepath.Glob(filepath.Join(out, "msg.*"))
		envs, _ := filepath.Glob(filepath.Join(out, "env.*"))
		if len(msgs) != 2 || len(envs) != 2 {
			t.Fatalf("exit %s: program ran %d/%d times, want 2", c.code, len(msgs), len(envs))
		}
		var gotEnvs []string
		for i := range msgs {
			m, _ := os.ReadFile(msgs[i])
			first, rest, _ := bytes.Cut(m, []byte("\n"))
			if !bytes.HasPrefix(first, []byte("Received: from unknown (127.0.0.1) by relay.example.test with QM")) || !bytes.Equal(rest, msg) {
				t.Fatalf("fd 0 got %q", m)
			}
			e, _ := os.ReadFile(envs[i])
			gotEnvs = append(gotEnvs, string(e))
		}
		want := []string{"Fa@example.test\x00Tb@example.test\x00Tc@example.test\x00\x00", "Fa@example.test\x00Td@example.test\x00Te@example.test\x00\x00"}
		if !(gotEnvs[0] == want[0] && gotEnvs[1] == want[1] || gotEnvs[0] == want[1] && gotEnvs[1] == want[0]) {
			t.Fatalf("fd 1 got %q, want %q", gotEnvs, want)
		}
	}
}

// SIGTERM: no new connections, the session in flight finishes and gets
// its K, the process exits 0.
func TestGracefulStop(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--grace", "20s")
	msg := []byte("Subject: in flight\n\n" + strings.Repeat("x", 5000) + "\n")
	var items []byte
	items = netstring.Append(items, msg)
	items = netstring.AppendString(items, "a@b")
	items = netstring.AppendString(items, "c@d")
	pkg := netstring.Append(nil, items)

	c, err := net.Dial("tcp", s.qmqp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(pkg[:100])
	waitServerRead(t, c) // the session is running
	s.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for { // the listener closes
		nc, err := net.DialTimeout("tcp", s.qmqp, time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Write(pkg[100:])
	replies, err := readReplies(c, 1, 20*time.Second)
	if err != nil || replies[0].Status != proto.OK {
		t.Fatalf("in-flight session after SIGTERM: %s %v", fmtReplies(replies), err)
	}
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if s.err != nil {
		t.Fatalf("serve exited with %v after SIGTERM", s.err)
	}
	files := readMaildir(t, dir)
	if len(files) != 1 || !bytes.Equal(files[0].message, msg) {
		t.Fatalf("%d files after the graceful stop", len(files))
	}
}

// SIGTERM with QMTP clients: one idle between packages is let go at once
// (it does not hold the stop up for the grace period), one in the middle
// of a package finishes it and gets its replies, then serve exits.
func TestGracefulStopQMTP(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir, "--grace", "60s")
	first := qmtpPackage([]byte("Subject: first\n\nbody\n"), false, "a@example.test", "idle@example.test")
	second := qmtpPackage([]byte("Subject: second\n\n"+strings.Repeat("y", 5000)+"\n"), false, "a@example.test", "busy@example.test")

	idle, err := net.Dial("tcp", s.qmtp)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write(first)
	if r, err := readReplies(idle, 1, 20*time.Second); err != nil || r[0].Status != proto.OK {
		t.Fatalf("idle client's package: %s %v", fmtReplies(r), err)
	}
	busy, err := net.Dial("tcp", s.qmtp)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.Write(second[:100])
	waitServerRead(t, busy) // both sessions are running (the idle one has had its reply)

	stopped := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	idle.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle QMTP client after SIGTERM: read %d bytes, %v; want the connection closed", n, err)
	}
	busy.Write(second[100:])
	if r, err := readReplies(busy, 1, 20*time.Second); err != nil || r[0].Status != proto.OK {
		t.Fatalf("package in flight at SIGTERM: %s %v", fmtReplies(r), err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second): // half the grace period
		t.Fatalf("serve still running %v after SIGTERM: an idle session holds it up", time.Since(stopped))
	}
	if s.err != nil {
		t.Fatalf("serve exited with %v", s.err)
	}
	if files := readMaildir(t, dir); len(files) != 2 {
		t.Fatalf("%d files after the stop, want 2", len(files))
	}
}

// --syncfs=false makes the maildir store commit each message's files
// with their own fsyncs (never a syncfs, which waits for whatever else
// the file system holds unwritten), and serve says at the first message
// which way it commits; the default is syncfs where the file system
// allows it (maildir.TestFileSystemSyncChosen).
func TestSyncfsFlag(t *testing.T) {
	env := proto.Envelope{Sender: "s@example.test", Recipients: []string{"r@example.test"}}
	msg := []byte("Subject: syncfs\n\nbody\n")
	s := startServe(t, "--maildir", filepath.Join(t.TempDir(), "Maildir"), "--syncfs=false")
	mustK(t, s.qmqp, env, msg)
	if !waitLog(t, s, `msg="maildir group commit"`, `sync="per file"`) {
		t.Fatalf("no per-file group commit line:\n%s", tail(s.log.String(), 2000))
	}
	s = startServe(t, "--maildir", filepath.Join(t.TempDir(), "Maildir"))
	mustK(t, s.qmqp, env, msg)
	if !waitLog(t, s, `msg="maildir group commit"`) {
		t.Fatalf("no group commit line:\n%s", tail(s.log.String(), 2000))
	}
}
