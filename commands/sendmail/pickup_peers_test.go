//go:build peers

package sendmail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qbox/commands/exitcode"
	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// The pickup of the system queue runs only as root (it alone may list the
// drop directory), so these tests need root; CI runs as root.

// dropOne leaves a message of size bytes in q's drop directory.
func dropOne(t *testing.T, q spool.SystemQueue, size int) []string {
	t.Helper()
	msg := bytes.Repeat([]byte("x"), size-1)
	msg = append(msg, '\n')
	paths, err := spool.Drop(q.DropDir(), proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test"}},
		bytes.NewReader(msg), int64(len(msg)), "")
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func dropsLeft(t *testing.T, q spool.SystemQueue) []string {
	t.Helper()
	entries, err := os.ReadDir(q.DropDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A pickup that cannot run (here: a drop directory that lost its sticky
// bit, which PickUp refuses as unsafe) is exit 75 with one line naming
// it, and the drop stays; the flush of what was queued still runs.
func TestPickupFailureExits75(t *testing.T) {
	testpeer.RequireRoot(t, "for the pickup, which runs only as root")
	top := publicDir(t, 0o755)
	q := makeSystemQueue(t, filepath.Join(top, "spool"))
	dropOne(t, q, 100)
	if err := os.Chmod(q.DropDir(), 0o733); err != nil { // the sticky bit gone
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p := &Process{Prog: "sendmail", Args: []string{"-q"}, Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &stderr,
		Getenv: envMap(map[string]string{"QBOX_SYSTEM_QUEUE": q.Root, "QMQPSERVERS": testpeer.ClosedAddr(t)})}
	// Sendmail returns its error; qbox's exit boundary (commands.Main)
	// prints it after the program's name and maps it under sysexits.
	err := Sendmail(context.Background(), p)
	if err != nil && !exitcode.Silent(err) {
		fmt.Fprintf(&stderr, "sendmail: %v\n", err)
	}
	// A temporary failure that is neither the input's nor the message's
	// is sysexits' 75 (exitcode's tests show the mapping).
	temp := exitcode.ClassOf(err) == exitcode.Temporary && !errors.Is(err, exitcode.ErrInput) && !errors.Is(err, exitcode.ErrData)
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if !temp || len(lines) != 1 || !strings.Contains(lines[0], "pickup failed") || !strings.Contains(lines[0], "sticky bit") {
		t.Fatalf("sendmail -q: %v (class %v), stderr %q; want a temporary failure (75) and one line naming the pickup's failure", err, exitcode.ClassOf(err), stderr.String())
	}
	if left := dropsLeft(t, q); len(left) != 1 {
		t.Errorf("drop directory holds %v, want the one drop left in place", left)
	}
}

// The case of the issue: the queue's file system is full. The queue is a
// 64 KiB tmpfs mounted in a mount namespace of the sendmail -q process
// alone (unshare -m: the host's mounts are not touched), and the drop is
// larger: the pickup fails with "no space left on device", exit 75, one
// line, and the drop stays where it was.
func TestPickupNoSpaceExits75(t *testing.T) {
	testpeer.RequireRoot(t, "to mount a tmpfs in a private mount namespace")
	unshare := testpeer.Require(t, "unshare", "util-linux")
	top := publicDir(t, 0o755)
	q := makeSystemQueue(t, filepath.Join(top, "spool"))
	sendmailPath := filepath.Join(top, "sendmail")
	if err := os.Symlink(testpeer.Binary(t), sendmailPath); err != nil {
		t.Fatal(err)
	}
	drops := dropOne(t, q, 256<<10)
	env := []string{"QBOX_SYSTEM_QUEUE=" + q.Root, "QMQPSERVERS=" + testpeer.ClosedAddr(t)}
	code, stdout, stderr := run(t, unshare, env, "", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=64k,mode=0700 qbox-full "$1" && exec "$2" -q`, "sh", q.QueueDir(), sendmailPath)
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if code != 75 || len(lines) != 1 || !strings.Contains(lines[0], "pickup failed") ||
		!strings.Contains(lines[0], "no space left on device") {
		t.Fatalf("sendmail -q on a full queue: exit %d, stdout %q, stderr %q; want 75 and one line naming the failure", code, stdout, stderr)
	}
	for _, d := range drops {
		if _, err := os.Lstat(d); err != nil {
			t.Errorf("drop %s: %v; want it left where it was", d, err)
		}
	}
}

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// The amplification case of the issue on a 64 KiB tmpfs queue (a private
// mount namespace, as above): one 20 KB drop to 200 recipients (4 MB in
// the old one-copy-per-recipient layout) and another user's small drop
// both fit, because each is stored once; a third drop larger than the
// disk is reported, stays in the drop directory, and makes the run exit
// 75 — it no longer stops the others.
func TestPickupStoresOnceOnSmallDisk(t *testing.T) {
	testpeer.RequireRoot(t, "to mount a tmpfs in a private mount namespace")
	unshare := testpeer.Require(t, "unshare", "util-linux")
	top := publicDir(t, 0o755)
	q := makeSystemQueue(t, filepath.Join(top, "spool"))
	sendmailPath := filepath.Join(top, "sendmail")
	if err := os.Symlink(testpeer.Binary(t), sendmailPath); err != nil {
		t.Fatal(err)
	}
	var rcpts []string
	for i := range 200 {
		rcpts = append(rcpts, fmt.Sprintf("r%03d@example.test", i))
	}
	msg := append([]byte("Subject: many\n\n"), bytes.Repeat([]byte("0123456789abcde\n"), 20<<10/16)...)
	if _, err := spool.Drop(q.DropDir(), proto.Envelope{Sender: "a@example.test", Recipients: rcpts}, bytes.NewReader(msg), int64(len(msg)), ""); err != nil {
		t.Fatal(err)
	}
	dropOne(t, q, 100)
	big := dropOne(t, q, 256<<10)
	env := []string{"QBOX_SYSTEM_QUEUE=" + q.Root, "QMQPSERVERS=" + testpeer.ClosedAddr(t)}
	// sendmail -q picks up (and defers: the hub is down), then -bp lists
	// the queue, both inside the namespace that has the tmpfs.
	code, stdout, stderr := run(t, unshare, env, "", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=64k,mode=0700 qbox-small "$1" || exit 9; "$2" -q; echo "rc=$?"; exec "$2" -bp`, "sh", q.QueueDir(), sendmailPath)
	if code != 0 || !strings.Contains(stdout, "rc=75\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want sendmail -q to exit 75", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "pickup failed") || !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, filepath.Base(big[0])) {
		t.Errorf("stderr %q; want the drop that did not fit named, with its reason", stderr)
	}
	listed := 0
	for _, r := range rcpts {
		if strings.Contains(stdout, " "+r+"\n") {
			listed++
		}
	}
	if listed != 200 || !strings.Contains(stdout, " b@example.test\n") {
		t.Errorf("the queue lists %d of the 200 recipients (and the small drop: %v):\n%s", listed, strings.Contains(stdout, " b@example.test\n"), stdout)
	}
	if left := dropsLeft(t, q); len(left) != 1 || left[0] != filepath.Base(big[0]) {
		t.Errorf("drop directory holds %v, want only the drop that did not fit", left)
	}
}
