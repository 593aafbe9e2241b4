package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
)

// A message to 10,000 recipients (the default --max-recipients) is stored
// by a serve that may open only 64 files: the store holds a constant
// number of files open, not one per recipient until the commit. (Before,
// 300 recipients under `ulimit -n 256` were deferred for ever.)
func TestTenThousandRecipientsUnderUlimit64(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 fsync'd files")
	}
	dir := t.TempDir()
	s := startServeUnder(t, "ulimit -n 64", "--maildir", dir)
	env := proto.Envelope{Sender: "many@example.test"}
	for i := range 10000 {
		env.Recipients = append(env.Recipients, fmt.Sprintf("r%05d@example.test", i))
	}
	// 10,000 fsync'd files take a while on a busy disk: a patient client.
	msg := []byte("Subject: to ten thousand\n\nbody\n")
	c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: 5 * time.Minute}
	r, err := c.Send(context.Background(), env, bytes.NewReader(msg), int64(len(msg)))
	if err != nil || r.Status != proto.OK {
		t.Fatalf("reply %q %v, want K", r.String(), err)
	}
	if n := countFiles(t, filepath.Join(dir, "new")); n != 10000 {
		t.Fatalf("%d files in new/, want 10000", n)
	}
	if n := countFiles(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
}

// --envelope-memory is the memory all sessions' envelopes share: a QMQP
// envelope beyond it gets Z and nothing is stored, QMTP recipients beyond
// it get Z and come again, and what fits is stored.
func TestEnvelopeMemoryFlag(t *testing.T) {
	dir := t.TempDir()
	// Room for three recipients of 15 bytes (each counts 128 more).
	s := startServe(t, "--maildir", dir, "--envelope-memory", strconv.Itoa(3*(15+128)))
	rcpts := []string{"r1@example.test", "r2@example.test", "r3@example.test", "r4@example.test"}
	msg := []byte("Subject: budget\n\nbody\n")
	r, err := sendQMQP(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: rcpts}, msg)
	if err != nil || r.Status != proto.Temporary {
		t.Fatalf("QMQP with 4 recipients: reply %q %v, want Z", r.String(), err)
	}
	mustK(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: rcpts[:3]}, msg)
	rs := qmtpRaw(t, s.qmtp, 4, qmtpPackage(msg, false, "a@example.test", rcpts...))
	if rs[0].Status != proto.OK || rs[2].Status != proto.OK || rs[3].Status != proto.Temporary {
		t.Fatalf("QMTP with 4 recipients: replies %s, want K K K Z", fmtReplies(rs))
	}
	if n := countFiles(t, filepath.Join(dir, "new")); n != 6 {
		t.Fatalf("%d files in new/, want 6", n)
	}
}
