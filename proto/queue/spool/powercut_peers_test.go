//go:build peers && linux

package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/testkit/crashfs"
)

// The power-cut tests run the spool code in a child process (this test
// binary again, running TestPowerCutHelper), on a crash file system the
// test process serves.

// TestPowerCutHelper is the child's side; run directly it does nothing.
func TestPowerCutHelper(t *testing.T) {
	what := os.Getenv("QBOX_CRASH_HELPER")
	if what == "" {
		return
	}
	if err := powerCutHelper(what, os.Getenv("QBOX_CRASH_ROOT"), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// powerCutTokens are the messages of a run; the message and recipients
// follow from the token.
func powerCutTokens() []string {
	var out []string
	for i := range 10 {
		out = append(out, fmt.Sprintf("cut%d-%d", i, i*i%31))
	}
	return out
}

func powerCutMessage(token string) []byte {
	n := 100 + (len(token)*7919+int(token[len(token)-1])*104729)%70000
	var b bytes.Buffer
	b.WriteString("Subject: " + token + "\n\n")
	for b.Len() < n {
		b.WriteString(token + "\n")
	}
	return b.Bytes()
}

func powerCutEnvelope(token string) proto.Envelope {
	env := proto.Envelope{Sender: "cut@example.test"}
	for i := range 1 + len(token)%3 {
		env.Recipients = append(env.Recipients, fmt.Sprintf("%s.%d@example.test", token, i))
	}
	return env
}

// powerCutHelper: "enqueue" queues every token into the spool ROOT/spool,
// printing "ok TOKEN" once each Enqueue returned; "pickup" runs PickUp
// on the system queue ROOT.
func powerCutHelper(what, root string, out io.Writer) error {
	switch what {
	case "enqueue":
		sp, err := Open(filepath.Join(root, "spool"))
		if err != nil {
			return err
		}
		for _, token := range powerCutTokens() {
			msg := powerCutMessage(token)
			if _, err := sp.Enqueue(powerCutEnvelope(token), bytes.NewReader(msg), int64(len(msg)), ""); err != nil {
				return err
			}
			fmt.Fprintf(out, "ok %s\n", token)
		}
	case "flush":
		sp, err := Open(filepath.Join(root, "spool"))
		if err != nil {
			return err
		}
		res, err := sp.Flush(context.Background(), FlushConfig{Client: powerCutSender{}})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "delivered %d deferred %d\n", res.Delivered, res.Deferred)
	case "pickup":
		res, err := PickUp(SystemQueue{Root: root}, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "picked %d refused %d\n", len(res.Picked), len(res.Refused))
	default:
		return fmt.Errorf("unknown helper %q", what)
	}
	return nil
}

// powerCutSender answers K for a token whose number is even, Z for the
// others.
type powerCutSender struct{}

func (powerCutSender) Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	io.Copy(io.Discard, msg)
	if powerCutDelivered(env.Recipients[0]) {
		return proto.K("ok"), nil
	}
	z := proto.Z("try later")
	return z, &proto.Error{Reply: z}
}

func powerCutDelivered(rcpt string) bool {
	n := strings.TrimPrefix(rcpt, "cut")
	return n != "" && (n[0]-'0')%2 == 0
}

// runPowerCutHelper runs the helper on the mount and calls line with
// each line it prints, as it prints it.
func runPowerCutHelper(t *testing.T, what, root string, line func(string)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPowerCutHelper$")
	cmd.Env = append(os.Environ(), "QBOX_CRASH_HELPER="+what, "QBOX_CRASH_ROOT="+root)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s helper: %v\n%s", what, err, stderr.String())
	}
}

// powerCutPoints are the sync points, the given points and every third
// operation (every operation under `make crashtest`), ascending.
func powerCutPoints(l *crashfs.Log, extra []int) []int {
	if os.Getenv("QBOX_CRASH_ALL") != "" {
		return l.AllPoints()
	}
	set := map[int]bool{}
	for _, k := range append(l.SyncPoints(), extra...) {
		set[k] = true
	}
	for k := 0; k <= l.Len(); k += 3 {
		set[k] = true
	}
	var pts []int
	for k := range set {
		pts = append(pts, k)
	}
	sort.Ints(pts)
	return pts
}

// queuedFiles reads a crashed spool's msg/: recipient to count, failing
// on any file that is not a whole message of a token, as Enqueue writes
// it (its message after head, when pickedUp: PickUp's Received line).
func queuedFiles(img *crashfs.Image, dir string, pickedUp bool) (map[string]int, error) {
	names, err := img.ReadDir(dir + "/msg")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, name := range names {
		b, err := img.ReadFile(dir + "/msg/" + name)
		if err != nil {
			return nil, err
		}
		rcpts, body, err := parseStoredImage(b)
		if err != nil {
			return nil, fmt.Errorf("%s/msg/%s is torn: %v: %d bytes, %q", dir, name, err, len(b), b[:min(len(b), 80)])
		}
		if pickedUp {
			head, rest, ok := bytes.Cut(body, []byte("\n"))
			if !ok || !bytes.HasPrefix(head, []byte("Received: (qbox invoked by uid 0); ")) {
				return nil, fmt.Errorf("%s/msg/%s lacks the pickup's Received line", dir, name)
			}
			body = rest
		}
		local, _, _ := strings.Cut(rcpts[0], "@")
		token := local[:strings.LastIndexByte(local, '.')]
		if !bytes.Equal(body, powerCutMessage(token)) {
			return nil, fmt.Errorf("%s/msg/%s (for %s) is torn: %d bytes", dir, name, token, len(b))
		}
		for _, r := range rcpts {
			out[r]++
		}
	}
	return out, nil
}

// parseStoredImage splits a stored message into its recipients and message.
func parseStoredImage(b []byte) ([]string, []byte, error) {
	head, body, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, nil, fmt.Errorf("no end of envelope")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0]+"\n" != storeMagic || len(lines) < 4 || lines[1] != "Fcut@example.test" || !strings.HasPrefix(lines[2], "S") {
		return nil, nil, fmt.Errorf("bad envelope")
	}
	var rcpts []string
	for _, l := range lines[3:] {
		if r, ok := strings.CutPrefix(l, "T"); ok {
			rcpts = append(rcpts, r)
		}
	}
	if len(rcpts) == 0 {
		return nil, nil, fmt.Errorf("no recipients")
	}
	return rcpts, body, nil
}

// Every message whose Enqueue returned is in new/ after a cut at or after
// that moment, whole; nothing torn is in new/ at any cut (what sendmail
// relies on for its exit 0 into a user's spool).
func TestPowerCutEnqueue(t *testing.T) {
	needRoot(t)
	backing := t.TempDir()
	fsys := crashfs.Mount(t, backing)
	acked := map[string]int{}
	runPowerCutHelper(t, "enqueue", fsys.Dir, func(line string) {
		if token, ok := strings.CutPrefix(line, "ok "); ok {
			acked[token] = fsys.Ops()
		}
	})
	if len(acked) != len(powerCutTokens()) {
		t.Fatalf("%d of %d messages queued", len(acked), len(powerCutTokens()))
	}
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	var extra []int
	for _, k := range acked {
		extra = append(extra, k)
	}
	pts := powerCutPoints(l, extra)
	err = l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		if _, err := img.ReadDir("spool/msg"); err != nil {
			// Before the spool's directories were made durable, no
			// Enqueue had returned.
			for token, at := range acked {
				if at <= k {
					return fmt.Errorf("no spool/msg/, yet %s was queued at %d: %v", token, at, err)
				}
			}
			return nil
		}
		files, err := queuedFiles(img, "spool", false)
		if err != nil {
			return err
		}
		for token, at := range acked {
			for _, r := range powerCutEnvelope(token).Recipients {
				if n := files[r]; n > 1 || (at <= k && n == 0) {
					return fmt.Errorf("%d files for %s, queued at operation %d", n, r, at)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages, %d operations (%s); %d cut points under %d models", len(acked), l.Len(), l.Summary(), len(pts), len(crashfs.Models))
}

// Root's pickup moves drop files into the queue: after a cut anywhere,
// every message is in the drop directory or in the queue (whole), never
// in neither. In both is the window no pickup can close (the queue's
// new/ is fsync'd before the drop file is removed): the next pickup
// queues it again. The test counts those duplicates.
func TestPowerCutPickUp(t *testing.T) {
	needRoot(t)
	backing := t.TempDir()
	q := SystemQueue{Root: filepath.Join(backing, "sys")}
	if err := q.Create(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(q.QueueDir()); err != nil {
		t.Fatal(err)
	}
	dropName := map[string]string{} // token -> drop file name
	dropData := map[string][]byte{}
	for _, token := range powerCutTokens() {
		msg := powerCutMessage(token)
		paths, err := Drop(q.DropDir(), powerCutEnvelope(token), bytes.NewReader(msg), int64(len(msg)), "")
		if err != nil || len(paths) != 1 {
			t.Fatalf("drop %s: %v %v", token, paths, err)
		}
		dropName[token] = filepath.Base(paths[0])
		if dropData[token], err = os.ReadFile(paths[0]); err != nil {
			t.Fatal(err)
		}
	}
	fsys := crashfs.Mount(t, backing) // the drop files are the durable base
	runPowerCutHelper(t, "pickup", filepath.Join(fsys.Dir, "sys"), func(line string) {
		if line != fmt.Sprintf("picked %d refused 0", len(dropName)) {
			t.Errorf("pickup: %s", line)
		}
	})
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	pts := powerCutPoints(l, nil)
	maxDup, cutsWithDup := 0, 0
	err = l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		files, err := queuedFiles(img, "sys/queue", true)
		if err != nil {
			return err
		}
		dup := 0
		for token, name := range dropName {
			b, err := img.ReadFile("sys/maildrop/" + name)
			inDrop := err == nil
			if inDrop && !bytes.Equal(b, dropData[token]) {
				return fmt.Errorf("drop file %s changed", name)
			}
			for _, r := range powerCutEnvelope(token).Recipients {
				switch n := files[r]; {
				case n > 1:
					return fmt.Errorf("%d files for %s in the queue", n, r)
				case n == 0 && !inDrop:
					return fmt.Errorf("%s (drop file %s) is neither in the drop directory nor in the queue", r, name)
				case n == 1 && inDrop:
					dup++
				}
			}
		}
		if dup > 0 {
			cutsWithDup++
			maxDup = max(maxDup, dup)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d drop files, %d operations (%s); %d cut points under %d models; %d images hold a duplicate-to-be (at most %d recipients)",
		len(dropName), l.Len(), l.Summary(), len(pts), len(crashfs.Models), cutsWithDup, maxDup)

	// A crashed image handed to PickUp again: everything ends queued,
	// nothing in the drop directory.
	img, err := l.Image(pts[len(pts)/2], crashfs.POSIX)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := img.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	q2 := SystemQueue{Root: filepath.Join(dir, "sys")}
	os.Chmod(q2.Root, 0o755) // modes are not in the image
	os.Chmod(q2.DropDir(), 0o733|os.ModeSticky)
	if _, err := PickUp(q2, time.Now()); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(q2.DropDir()); len(left) != 0 {
		t.Errorf("%d drop files left after a second pickup", len(left))
	}
	for token := range dropName {
		for _, r := range powerCutEnvelope(token).Recipients {
			if !queuedOnDisk(t, q2.QueueDir(), r) {
				t.Errorf("%s not queued after a second pickup", r)
			}
		}
	}
}

func queuedOnDisk(t *testing.T, dir, rcpt string) bool {
	t.Helper()
	q, _, err := (&Spool{Dir: dir}).Queued()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range q {
		if r.Recipient == rcpt {
			return true
		}
	}
	return false
}

// A flush records each message's outcome (its state file rewritten, or
// the message removed once every recipient is done): after a cut
// anywhere, a deferred message is still queued whole, every state file
// present is whole (never torn), and a state file never outlives its
// message's file in a way that loses a recipient.
func TestPowerCutStateUpdates(t *testing.T) {
	needRoot(t)
	backing := t.TempDir()
	sp, err := Open(filepath.Join(backing, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	for _, token := range powerCutTokens() {
		msg := powerCutMessage(token)
		if _, err := sp.Enqueue(powerCutEnvelope(token), bytes.NewReader(msg), int64(len(msg)), ""); err != nil {
			t.Fatal(err)
		}
	}
	fsys := crashfs.Mount(t, backing) // the queued messages are the durable base
	runPowerCutHelper(t, "flush", fsys.Dir, func(line string) {
		if line != "delivered 6 deferred 8" {
			t.Errorf("flush: %s", line)
		}
	})
	l, err := fsys.Log()
	if err != nil {
		t.Fatal(err)
	}
	pts := powerCutPoints(l, nil)
	final := pts[len(pts)-1]
	err = l.Images(pts, crashfs.Models, func(k int, img *crashfs.Image) error {
		files, err := queuedFiles(img, "spool", false)
		if err != nil {
			return err
		}
		for _, token := range powerCutTokens() {
			for _, r := range powerCutEnvelope(token).Recipients {
				if !powerCutDelivered(r) && files[r] != 1 {
					return fmt.Errorf("deferred %s: %d copies queued", r, files[r])
				}
				if k == final && powerCutDelivered(r) && files[r] != 0 {
					return fmt.Errorf("delivered %s still queued after the whole run", r)
				}
			}
		}
		names, err := img.ReadDir("spool/state")
		if err != nil {
			return err
		}
		for _, n := range names {
			b, err := img.ReadFile("spool/state/" + n)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(b, []byte(stateMagic)) || !bytes.HasSuffix(b, []byte("\n")) {
				return fmt.Errorf("state file %s is torn: %q", n, b)
			}
			for _, line := range strings.Split(strings.TrimSuffix(string(b[len(stateMagic):]), "\n"), "\n") {
				if line == "" || !strings.ContainsRune("AHR", rune(line[0])) {
					return fmt.Errorf("state file %s is torn: %q", n, b)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations (%s); %d cut points under %d models", l.Len(), l.Summary(), len(pts), len(crashfs.Models))
}
