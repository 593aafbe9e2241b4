package maildir

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

var fixedTime = time.Date(2024, 3, 5, 6, 7, 8, 0, time.UTC)

func testStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Hostname = "mx.example.test"
	s.Now = func() time.Time { return fixedTime }
	return s
}

var testPeer = proto.Peer{Protocol: "QMQP", RemoteIP: "127.0.0.1", RemoteHost: "client.example.test"}

// deliver writes msg in chunks of chunk bytes and commits it.
func deliver(t *testing.T, s *Store, peer proto.Peer, msg []byte, chunk int, env proto.Envelope) []proto.Reply {
	t.Helper()
	d, err := s.Begin(context.Background(), peer, int64(len(msg)))
	if err != nil {
		t.Fatal(err)
	}
	for rest := msg; len(rest) > 0; {
		n := min(chunk, len(rest))
		if w, err := d.Write(rest[:n]); err != nil || w != n {
			t.Fatalf("Write = %d, %v", w, err)
		}
		rest = rest[n:]
	}
	return d.Commit(context.Background(), env)
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func wantAll(t *testing.T, replies []proto.Reply, n int, status proto.Status) {
	t.Helper()
	if len(replies) != n {
		t.Fatalf("got %d replies, want %d: %v", len(replies), n, replies)
	}
	for i, r := range replies {
		if r.Status != status {
			t.Fatalf("reply %d = %q, want status %c", i, r.String(), status)
		}
	}
}

// filesByRecipient checks the layout of every file in new/ and returns the
// message part of each, keyed by its Delivered-To.
func filesByRecipient(t *testing.T, dir, sender, received string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, b := range dirFiles(t, filepath.Join(dir, "new")) {
		lines := bytes.SplitN(b, []byte("\n"), 4)
		if len(lines) != 4 {
			t.Fatalf("%s: fewer than 3 header lines: %q", name, b)
		}
		if got, want := string(lines[0]), "Return-Path: <"+sender+">"; got != want {
			t.Fatalf("%s: line 1 = %q, want %q", name, got, want)
		}
		rcpt, ok := strings.CutPrefix(string(lines[1]), "Delivered-To: ")
		if !ok {
			t.Fatalf("%s: line 2 = %q", name, lines[1])
		}
		if string(lines[2]) != received {
			t.Fatalf("%s: line 3 = %q, want %q", name, lines[2], received)
		}
		out[rcpt] = lines[3]
	}
	return out
}

const wantReceived = "Received: from client.example.test (127.0.0.1) by mx.example.test with QMQP; 5 Mar 2024 06:07:08 -0000"

func TestStoreSmallMessage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	s := testStore(t, dir) // creates the maildir
	msg := []byte("Subject: hi\n\nbody with \x00 NUL and \xff high bytes\nno final newline")
	env := proto.Envelope{Sender: "alice@example.test", Recipients: []string{"bob@example.test", "carol@example.test", "bob@example.test"}}
	replies := deliver(t, s, testPeer, msg, 7, env)
	wantAll(t, replies, 3, proto.OK)
	if !strings.HasPrefix(replies[0].Text, "ok ") {
		t.Errorf("K text %q", replies[0].Text)
	}
	files := dirFiles(t, filepath.Join(dir, "new"))
	if len(files) != 3 {
		t.Fatalf("%d files in new/, want 3 (one per recipient, duplicates included)", len(files))
	}
	got := filesByRecipient(t, dir, "alice@example.test", wantReceived)
	for _, r := range env.Recipients {
		if !bytes.Equal(got[r], msg) {
			t.Errorf("message for %s = %q, want %q", r, got[r], msg)
		}
	}
	if left := dirFiles(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ not empty: %v", left)
	}
}

func TestStoreSpooledMessage(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	s.SpoolInMemory = 1000 // force the file path for a modest message
	msg := make([]byte, 3<<20+17)
	rand.Read(msg)
	for _, declared := range []int64{int64(len(msg)), 10} { // declared size decides the start, not the outcome
		d, err := s.Begin(context.Background(), testPeer, declared)
		if err != nil {
			t.Fatal(err)
		}
		// Writes of varying sizes, some larger than the spool buffer.
		for rest, n := msg, 1; len(rest) > 0; n = n*3 + 1 {
			k := min(n, len(rest))
			d.Write(rest[:k])
			rest = rest[k:]
		}
		env := proto.Envelope{Sender: "", Recipients: []string{"r1@x", "r2@x"}}
		wantAll(t, d.Commit(context.Background(), env), 2, proto.OK)
	}
	got := dirFiles(t, filepath.Join(dir, "new"))
	if len(got) != 4 {
		t.Fatalf("%d files, want 4", len(got))
	}
	for name, b := range got {
		if !bytes.HasPrefix(b, []byte("Return-Path: <>\nDelivered-To: r")) {
			t.Fatalf("%s starts %q", name, b[:40])
		}
		_, body, _ := bytes.Cut(b, []byte(wantReceived+"\n"))
		if !bytes.Equal(body, msg) {
			t.Fatalf("%s: stored message differs (%d bytes, want %d)", name, len(body), len(msg))
		}
	}
	if left := dirFiles(t, filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ not empty: %v", left)
	}
}

func TestStoreAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	s.SpoolInMemory = 10
	for _, size := range []int{5, 5000} {
		d, err := s.Begin(context.Background(), testPeer, int64(size))
		if err != nil {
			t.Fatal(err)
		}
		d.Write(bytes.Repeat([]byte("x"), size))
		d.Abort()
		d.Abort() // twice is harmless
	}
	for _, sub := range []string{"new", "tmp", "cur"} {
		if left := dirFiles(t, filepath.Join(dir, sub)); len(left) != 0 {
			t.Errorf("%s/ not empty after Abort: %v", sub, left)
		}
	}
}

// The peer's strings are made safe in the Received line; an address the
// store cannot write unchanged is refused with D, never rewritten (LF
// used to become '_', which changes where the mail goes), while the good
// recipients of the same message are stored.
func TestStoreHeaderSanitising(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	peer := proto.Peer{Protocol: "QMTP", RemoteIP: "::1", RemoteHost: "evil\r\nX-Injected: yes (host)"}
	env := proto.Envelope{Sender: "a@x", Recipients: []string{"c\nd@y", "ok@y", "a\rb@c", "a\x00b", ""}}
	replies := deliver(t, s, peer, []byte("\n"), 1, env)
	for i, want := range []proto.Status{proto.Permanent, proto.OK, proto.Permanent, proto.Permanent, proto.Permanent} {
		if replies[i].Status != want {
			t.Fatalf("reply %d (%q) = %q, want %c", i, env.Recipients[i], replies[i].String(), want)
		}
	}
	files := dirFiles(t, filepath.Join(dir, "new"))
	if len(files) != 1 {
		t.Fatalf("%d files stored, want 1", len(files))
	}
	for _, b := range files {
		want := "Return-Path: <a@x>\nDelivered-To: ok@y\n" +
			"Received: from evil??X-Injected:?yes??host? (::1) by mx.example.test with QMTP; 5 Mar 2024 06:07:08 -0000\n\n"
		if string(b) != want {
			t.Fatalf("file =\n%q\nwant\n%q", b, want)
		}
	}
	for _, sender := range []string{"a\nb@x", "a\rb@x", "a\x00b@x"} {
		wantAll(t, deliver(t, s, peer, []byte("\n"), 1, proto.Envelope{Sender: sender, Recipients: []string{"ok@y", "ok2@y"}}), 2, proto.Permanent)
	}
	if files := dirFiles(t, filepath.Join(dir, "new")); len(files) != 1 {
		t.Fatalf("%d files stored after refused senders, want 1", len(files))
	}
}

func TestStoreZeroRecipientsStoresNothing(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	if r := deliver(t, s, testPeer, []byte("x\n"), 10, proto.Envelope{Sender: "a@b"}); len(r) != 0 {
		t.Fatalf("replies %v for zero recipients", r)
	}
	if left := dirFiles(t, filepath.Join(dir, "new")); len(left) != 0 {
		t.Errorf("new/ not empty: %v", left)
	}
}

func TestStoreCancelledIsTemporary(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	d, _ := s.Begin(context.Background(), testPeer, 3)
	d.Write([]byte("hi\n"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wantAll(t, d.Commit(ctx, proto.Envelope{Recipients: []string{"a@b"}}), 1, proto.Temporary)
	if left := dirFiles(t, filepath.Join(dir, "new")); len(left) != 0 {
		t.Errorf("new/ not empty: %v", left)
	}
}

// Where the file system has no O_TMPFILE the store writes through Batch
// (tmp/, rename); the layout and the guarantees are the same.
func TestStoreBatchFallback(t *testing.T) {
	was := tmpfileUnsupported.Load()
	tmpfileUnsupported.Store(true)
	defer tmpfileUnsupported.Store(was)
	TestStoreSmallMessage(t)
	TestStoreSpooledMessage(t)
	TestStoreAbortLeavesNothing(t)
}

// A message to more recipients than MaxOpenFiles, through both batch
// kinds, from memory and from a spool file: every recipient's file is
// stored whole, tmp/ is left empty, and an abort half-way leaves nothing.
func TestStoreManyRecipientsFewFiles(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("Batch=%v", fallback), func(t *testing.T) {
			was := tmpfileUnsupported.Load()
			tmpfileUnsupported.Store(fallback || was)
			defer tmpfileUnsupported.Store(was)
			for _, size := range []int{100, 200 << 10} {
				dir := t.TempDir()
				s := testStore(t, dir)
				msg := bytes.Repeat([]byte("m"), size)
				env := proto.Envelope{Sender: "a@b"}
				for i := range 3*MaxOpenFiles + 1 {
					env.Recipients = append(env.Recipients, fmt.Sprintf("r%d@x", i))
				}
				wantAll(t, deliver(t, s, testPeer, msg, 32<<10, env), len(env.Recipients), proto.OK)
				files := dirFiles(t, filepath.Join(dir, "new"))
				if len(files) != len(env.Recipients) {
					t.Fatalf("%d files in new/, want %d", len(files), len(env.Recipients))
				}
				seen := map[string]bool{}
				for name, b := range files {
					if !bytes.HasSuffix(b, msg) {
						t.Fatalf("%s: message not stored whole (%d bytes)", name, len(b))
					}
					_, rest, _ := bytes.Cut(b, []byte("Delivered-To: "))
					rcpt, _, _ := bytes.Cut(rest, []byte("\n"))
					seen[string(rcpt)] = true
				}
				if len(seen) != len(env.Recipients) {
					t.Fatalf("%d distinct recipients stored, want %d", len(seen), len(env.Recipients))
				}
				if left := dirFiles(t, filepath.Join(dir, "tmp")); len(left) != 0 {
					t.Fatalf("tmp/ holds %d files", len(left))
				}
			}
			// A cancelled delivery half-way through leaves nothing behind.
			dir := t.TempDir()
			if err := Init(dir); err != nil {
				t.Fatal(err)
			}
			b := newFileBatch(dir)
			if fallback {
				b = NewBatch(dir)
			}
			for range 3 * MaxOpenFiles {
				f, err := b.Create()
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString("x")
			}
			b.Abort()
			for _, sub := range []string{"new", "tmp"} {
				if left := dirFiles(t, filepath.Join(dir, sub)); len(left) != 0 {
					t.Fatalf("%s/ holds %d files after Abort", sub, len(left))
				}
			}
		})
	}
}

// The client's address is logged under "remote", the key every server
// and backend uses for it (qbox serve's session lines included).
func TestStoreLogsRemote(t *testing.T) {
	dir := t.TempDir()
	s := testStore(t, dir)
	var log bytes.Buffer
	s.Logger = slog.New(slog.NewTextHandler(&log, nil))
	r := deliver(t, s, testPeer, []byte("x\n"), 10, proto.Envelope{Sender: "a@b", Recipients: []string{"bad\r\n@x"}})
	if len(r) != 1 || r[0].Status != proto.Permanent {
		t.Fatalf("replies %v, want one D", r)
	}
	if !strings.Contains(log.String(), " remote=127.0.0.1 ") || strings.Contains(log.String(), "remote_ip") {
		t.Fatalf("log %q: want remote=127.0.0.1", log.String())
	}
}

// The K text is as short as qmail-qmtpd's (QMTP sends it once per
// recipient), names the first file's key by its seconds and Q number, and
// the "maildir stored" log line pairs that text with the file's full path.
func TestStoreShortReply(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	s := testStore(t, dir)
	var log bytes.Buffer
	s.Logger = slog.New(slog.NewTextHandler(&log, nil))
	env := proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test", "c@example.test"}}
	replies := deliver(t, s, testPeer, []byte("Subject: hi\n\nbody\n"), 5, env)
	wantAll(t, replies, 2, proto.OK)
	text := replies[0].Text
	if len(text) > 24 || replies[1].Text != text {
		t.Fatalf("K texts %q, %q: want one text of at most 24 bytes (qmail-qmtpd's size)", text, replies[1].Text)
	}
	f := strings.Fields(text)
	if len(f) != 3 || f[0] != "ok" || !strings.HasPrefix(f[2], "Q") {
		t.Fatalf("K text %q, want \"ok SECONDS Qn\"", text)
	}
	var named string
	for name := range dirFiles(t, filepath.Join(dir, "new")) {
		if strings.HasPrefix(name, f[1]+".P") && strings.Contains(name, f[2]+"R") {
			named = name
		}
	}
	if named == "" {
		t.Fatalf("K text %q names no file in new/", text)
	}
	want := "path=" + filepath.Join(dir, "new", named)
	if !strings.Contains(log.String(), `reply="`+text+`"`) || !strings.Contains(log.String(), want) {
		t.Errorf("log %q: want the reply text and %s on one line", log.String(), want)
	}
}

func TestShortReplyUnknownKey(t *testing.T) {
	if got := shortReply("odd-name", fixedTime); got != "ok "+strconv.FormatInt(fixedTime.Unix(), 10) {
		t.Errorf("shortReply(odd-name) = %q", got)
	}
}
