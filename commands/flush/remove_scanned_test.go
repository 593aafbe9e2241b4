package flush

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/qmtp"
)

// After a K, flush-maildir removes the file. If the user who can write
// the maildir has meanwhile replaced new/ by a symlink to a directory of
// root's holding a file of the same name, that file must survive: only
// the file the scan saw is removed (maildir.Entry.Remove).
func TestFlushRemovesOnlyTheScannedFile(t *testing.T) {
	addr, _ := serve(t)
	src := newMaildir(t)
	enqueue(t, src, "passwd", "s@example.test", "ppp-r@remote.test", []byte("Subject: x\n\nx\n"), time.Minute)
	etc := t.TempDir()
	if err := os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	connect := hostConnect(addr, &qmtp.Client{})
	swapping := func(ctx context.Context) (net.Conn, string, error) {
		conn, server, err := connect(ctx)
		if err != nil {
			return nil, "", err
		}
		return &swapNewOnRead{Conn: conn, t: t, src: src, etc: etc}, server, nil
	}
	if _, err := Run(context.Background(), Config{Dir: src, Prefix: "ppp-", Rounds: 1, Connect: swapping}); err != nil {
		t.Logf("run: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(etc, "passwd")); err != nil || string(b) != "root:x:0:0\n" {
		t.Fatalf("the file behind the swapped new/ was removed or changed: %q %v", b, err)
	}
}

// swapNewOnRead replaces new/ by a symlink to etc when the client first
// waits for a reply: after the scan, before the K is acted on.
type swapNewOnRead struct {
	net.Conn
	t        *testing.T
	src, etc string
	swapped  bool
}

func (c *swapNewOnRead) Read(b []byte) (int, error) {
	if !c.swapped {
		c.swapped = true
		if err := os.Rename(filepath.Join(c.src, "new"), filepath.Join(c.src, "new.real")); err != nil {
			c.t.Error(err)
		}
		if err := os.Symlink(c.etc, filepath.Join(c.src, "new")); err != nil {
			c.t.Error(err)
		}
	}
	return c.Conn.Read(b)
}
