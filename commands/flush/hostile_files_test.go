package flush

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"qbox/proto/qmtp"
)

// A root flush-maildir of a maildir a less trusted user can write: a
// symlink to a file only root can read (shaped as mail to the planter), a
// FIFO, and a file whose Delivered-To smuggles a CR are never sent to
// `qbox serve`; each is named as malformed on every run, and left for a
// person to look at.
func TestFlushNeverSendsPlantedFiles(t *testing.T) {
	addr, dest := serve(t)
	src := newMaildir(t)
	secret := "TOP-SECRET-" + t.Name()
	shadow := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(shadow, []byte("Return-Path: <root@example.test>\nDelivered-To: ppp-planter@evil.test\n\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enqueue(t, src, "1700000001.ok.host", "s@example.test", "ppp-r@remote.test", []byte("Subject: honest\n\nhonest\n"), time.Minute)
	if err := os.Symlink(shadow, filepath.Join(src, "new", "1700000002.link.host")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shadow, filepath.Join(src, "cur", "1700000003.link.host:2,")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(src, "new", "1700000004.fifo.host"), 0o600); err != nil {
		t.Fatal(err)
	}
	enqueue(t, src, "1700000005.cr.host", "s@example.test", "ppp-r@remote.test\r", []byte("Subject: cr\n\ncr\n"), time.Minute)
	planted := []string{"new/1700000002.link.host", "cur/1700000003.link.host:2,", "new/1700000004.fifo.host", "new/1700000005.cr.host"}

	for run := 1; run <= 2; run++ {
		stdout, stderr, code := runQbox(t, nil, "flush-maildir", src, "ppp-", addr)
		if code != 111 {
			t.Fatalf("run %d: exit %d, want 111 (planted files remain)\n%s%s", run, code, stdout, stderr)
		}
		for _, name := range planted {
			if !strings.Contains(stdout, "malformed "+name) {
				t.Errorf("run %d: %s not reported:\n%s", run, name, stdout)
			}
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("run %d: output shows the secret:\n%s%s", run, stdout, stderr)
		}
	}
	got, count := delivered(t, dest)
	if len(got) != 1 || count["r@remote.test"] != 1 {
		t.Errorf("delivered %v, want the honest message once", count)
	}
	for rcpt, m := range got {
		if strings.Contains(string(m.body), secret) || strings.Contains(rcpt, "planter") {
			t.Errorf("the secret was sent to %s: %q", rcpt, m.body)
		}
	}
	left := strings.Join(remaining(t, src), " ")
	for _, name := range planted {
		if !strings.Contains(left, name) {
			t.Errorf("%s removed; left: %s", name, left)
		}
	}
}

// The scan saw an honest file; before the message is read (here: while
// the session connects), the planter swaps it for a symlink to a file
// only root can read. The file sent is the file scanned, so nothing of
// the swapped-in file reaches the server, and the run names the file.
func TestFlushRefusesFileSwappedAfterScan(t *testing.T) {
	addr, dest := serve(t)
	src := newMaildir(t)
	secret := "TOP-SECRET-" + t.Name()
	shadow := filepath.Join(t.TempDir(), "shadow")
	// Longer than the honest file, so all the bytes the scan promised
	// could be read from it.
	shadowText := "Return-Path: <root@example.test>\nDelivered-To: ppp-planter@evil.test\n\n" + strings.Repeat(secret+"\n", 100)
	if err := os.WriteFile(shadow, []byte(shadowText), 0o600); err != nil {
		t.Fatal(err)
	}
	name := "1700000001.swap.host"
	enqueue(t, src, name, "s@example.test", "ppp-r@remote.test", []byte("Subject: honest\n\n"+strings.Repeat("honest\n", 40)), time.Minute)
	connect := hostConnect(addr, &qmtp.Client{})
	swapped := false
	swapThenConnect := func(ctx context.Context) (net.Conn, string, error) {
		if !swapped {
			swapped = true
			p := filepath.Join(src, "new", name)
			if err := os.Symlink(shadow, p+".tmp"); err != nil {
				t.Error(err)
			}
			if err := os.Rename(p+".tmp", p); err != nil {
				t.Error(err)
			}
		}
		return connect(ctx)
	}
	var out bytes.Buffer
	sum, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Rounds: 1, Connect: swapThenConnect, Out: &out})
	if err == nil || sum.Succeeded != 0 {
		t.Errorf("run: %v %+v, want nothing delivered and the file left\n%s", err, sum, out.String())
	}
	if !swapped {
		t.Fatal("the session never connected")
	}
	if !strings.Contains(out.String(), "new/"+name) {
		t.Errorf("the swapped file is not named:\n%s", out.String())
	}
	if strings.Contains(out.String(), secret) {
		t.Errorf("output shows the secret:\n%s", out.String())
	}
	got, _ := delivered(t, dest)
	for rcpt, m := range got {
		t.Errorf("delivered to %s: %q", rcpt, m.body)
	}
	if b, err := os.ReadFile(shadow); err != nil || string(b) != shadowText {
		t.Errorf("the target changed: %q %v", b, err)
	}
	t.Logf("run output:\n%s", out.String())
}
