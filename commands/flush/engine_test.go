package flush

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/qmtp"
)

// A file the scan saw and that is swapped for a symlink before it is
// read is reported with status "malformed" (it is no longer a message
// the queue can send), not "deferred" as if a server had been busy.
func TestFlushSwappedFileIsMalformed(t *testing.T) {
	addr, _ := serve(t)
	src := newMaildir(t)
	shadow := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(shadow, []byte("Return-Path: <root@example.test>\nDelivered-To: ppp-planter@evil.test\n\nsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := "1700000001.swap.host"
	enqueue(t, src, name, "s@example.test", "ppp-r@remote.test", []byte("Subject: honest\n\nhonest\n"), time.Minute)
	connect := hostConnect(addr, &qmtp.Client{})
	swapThenConnect := func(ctx context.Context) (net.Conn, string, error) {
		p := filepath.Join(src, "new", name)
		if err := os.Symlink(shadow, p+".tmp"); err != nil {
			t.Error(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Error(err)
		}
		return connect(ctx)
	}
	var out bytes.Buffer
	sum, _ := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Rounds: 1, Connect: swapThenConnect, Out: &out, JSON: true})
	r := parseJSON(t, out.String())
	if len(r.Messages) != 1 || r.Messages[0].File != "new/"+name || r.Messages[0].Status != "malformed" {
		t.Fatalf("outcomes %+v, want new/%s malformed\n%s", r.Messages, name, out.String())
	}
	if sum.Malformed != 1 || sum.Deferred != 0 || sum.Remaining != 1 {
		t.Errorf("summary %+v, want 1 malformed, 0 deferred, 1 left", sum)
	}
}
