package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"qbox/proto"
)

// DefaultSpoolInMemory is how much of a message a delivery keeps in memory
// before it spills to a spool file: small messages (most mail) then cost
// no extra file, and 200 concurrent sessions still stay far below 128 MiB.
const DefaultSpoolInMemory = 64 << 10

// Store is a proto.Backend that delivers every message into a maildir as
// one file per recipient, in the layout qmail-local writes and serialmail
// (and qbox flush-maildir) reads:
//
//	Return-Path: <sender>
//	Delivered-To: recipient
//	Received: from HOST (IP) by LOCALHOST with QMQP; 2 Jan 2006 15:04:05 -0000
//	message...
//
// A recipient's K is given only after all files of the message are
// durable, named in new/ and new/ itself is fsync'd. Any failure
// answers Z for every recipient and leaves nothing in new/. Concurrent
// deliveries share their syncs (a group commit, see group): one syncfs(2)
// for the files and one fsync of new/ for the names of every message
// committed meanwhile, and a failure of either answers Z for all of them.
//
// A Store must not be copied after first use.
type Store struct {
	Dir string
	// Hostname names this server in the Received line; empty means the
	// peer's LocalHost, then os.Hostname.
	Hostname string
	// SpoolInMemory is the number of message bytes kept in memory before
	// the rest goes to a spool file in tmp/; 0 means DefaultSpoolInMemory.
	SpoolInMemory int
	// Logger receives the reason of every Z (the client only sees a
	// generic text). nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for the Received line; nil means time.Now.
	Now func() time.Time

	// group shares syncs among concurrent deliveries, as prepare set
	// up once.
	group    group
	prepared sync.Once
	commits  groupSync
	failures atomic.Uint64
	// syncDir, when set, replaces SyncDir for new/ (tests).
	syncDir func(string) error
	// PerFile makes the group commit per file: each message's files
	// fsync'd by their own delivery, never a syncfs(2) (which also waits
	// for whatever else the file system holds unwritten).
	PerFile bool
	// syncFS, when set, replaces syncfs(2) and makes the group commit use
	// it (tests).
	syncFS func() error
	// alone commits each delivery by itself, as before the group commit
	// (the benchmark's comparison).
	alone bool
}

// NewStore creates the maildir dir (tmp/, new/, cur/) if missing and
// returns a Store writing into it.
func NewStore(dir string) (*Store, error) {
	if err := Init(dir); err != nil {
		return nil, fmt.Errorf("maildir %s: %w", dir, err)
	}
	return &Store{Dir: dir}, nil
}

// Begin starts spooling one message. size is the length the client
// declared; it only decides whether to spool to a file straight away.
func (s *Store) Begin(ctx context.Context, peer proto.Peer, size int64) (proto.Delivery, error) {
	limit := s.SpoolInMemory
	if limit <= 0 {
		limit = DefaultSpoolInMemory
	}
	d := &storeDelivery{store: s, peer: peer, memLimit: limit}
	if size > int64(limit) {
		if err := d.spill(); err != nil {
			return nil, err
		}
	} else if size > 0 {
		d.mem = make([]byte, 0, size)
	}
	return d, nil
}

type storeDelivery struct {
	store    *Store
	peer     proto.Peer
	memLimit int
	mem      []byte   // the message while it fits in memory
	spool    *os.File // the message once it did not (unlinked: a crash leaves nothing)
	spoolBuf []byte   // write buffer in front of spool
	size     int64
	err      error // first spooling error: the message will get Z
	done     bool
}

// Write spools message bytes. A spooling error (disk full) is remembered
// and the rest of the message discarded, so the server still reads the
// whole package and the client gets a clear Z from Commit instead of a
// dropped connection.
func (d *storeDelivery) Write(p []byte) (int, error) {
	if d.done {
		return 0, errors.New("maildir: write after commit or abort")
	}
	n := len(p)
	d.size += int64(n)
	if d.err != nil {
		return n, nil
	}
	if d.spool == nil {
		if len(d.mem)+len(p) <= d.memLimit {
			d.mem = append(d.mem, p...)
			return n, nil
		}
		if err := d.spill(); err != nil {
			d.err = err
			return n, nil
		}
	}
	if len(d.spoolBuf)+len(p) > cap(d.spoolBuf) {
		if err := d.flushSpool(); err != nil {
			d.err = err
			return n, nil
		}
	}
	if len(p) >= cap(d.spoolBuf) {
		if _, err := d.spool.Write(p); err != nil {
			d.err = fmt.Errorf("maildir: spool: %w", err)
		}
		return n, nil
	}
	d.spoolBuf = append(d.spoolBuf, p...)
	return n, nil
}

// spill moves the message from memory to a spool file in tmp/. The file
// is unlinked at once: it is only ever read through the open descriptor,
// and a crash cannot leave it behind.
func (d *storeDelivery) spill() error {
	f, err := os.OpenFile(filepath.Join(d.store.Dir, "tmp", "spool."+NewKey()), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0600)
	if err != nil {
		return fmt.Errorf("maildir: spool: %w", err)
	}
	os.Remove(f.Name())
	d.spool = f
	d.spoolBuf = make([]byte, 0, 64<<10)
	if len(d.mem) > 0 {
		d.spoolBuf = append(d.spoolBuf, d.mem...)
	}
	d.mem = nil
	return nil
}

func (d *storeDelivery) flushSpool() error {
	if len(d.spoolBuf) == 0 {
		return nil
	}
	_, err := d.spool.Write(d.spoolBuf)
	d.spoolBuf = d.spoolBuf[:0]
	if err != nil {
		return fmt.Errorf("maildir: spool: %w", err)
	}
	return nil
}

// Abort discards the message.
func (d *storeDelivery) Abort() {
	if d.done {
		return
	}
	d.done = true
	d.release()
}

func (d *storeDelivery) release() {
	if d.spool != nil {
		d.spool.Close()
		d.spool = nil
	}
	d.mem, d.spoolBuf = nil, nil
}

// Commit writes one file per recipient and answers K for all of them once
// they are durable, or Z for all of them. An address the store cannot
// write into a header line unchanged (CR, LF or NUL; an empty recipient)
// is refused with D, never rewritten: the servers refuse such addresses
// where they enter, this is the second line of defence. A bad sender
// refuses every recipient; a bad recipient only itself.
func (d *storeDelivery) Commit(ctx context.Context, env proto.Envelope) []proto.Reply {
	if d.done {
		return proto.Repeat(len(env.Recipients), proto.Z("internal error: delivery already finished (#4.3.0)"))
	}
	d.done = true
	defer d.release()
	if len(env.Recipients) == 0 {
		return nil
	}
	if err := proto.CheckSender(env.Sender); err != nil {
		d.store.logger().Error("maildir delivery refused", "dir", d.store.Dir, "remote", d.peer.RemoteIP,
			"recipients", len(env.Recipients), "err", err)
		return proto.Repeat(len(env.Recipients), ReplyUnwritableAddress)
	}
	replies := make([]proto.Reply, len(env.Recipients))
	good := make([]string, 0, len(env.Recipients))
	for i, r := range env.Recipients {
		if err := proto.CheckRecipient(r); err != nil {
			replies[i] = ReplyUnwritableAddress
			d.store.logger().Error("maildir recipient refused", "dir", d.store.Dir, "remote", d.peer.RemoteIP, "err", err)
			continue
		}
		good = append(good, r)
	}
	if len(good) == 0 {
		return replies
	}
	var reply proto.Reply
	key, err := d.store.deliver(ctx, d, env.Sender, good)
	if err != nil {
		d.store.logger().Error("maildir delivery failed", "dir", d.store.Dir, "remote", d.peer.RemoteIP,
			"sender", proto.Printable(env.Sender, 1000), "recipients", len(good), "size", d.size, "err", err)
		reply = proto.Z(tempText(err))
	} else {
		reply = proto.K(shortReply(key, d.store.now()))
		d.store.logger().Info("maildir stored", "reply", reply.Text, "path", filepath.Join(d.store.Dir, "new", key),
			"files", len(good))
	}
	for i := range replies {
		if replies[i].Status == 0 {
			replies[i] = reply
		}
	}
	return replies
}

// shortReply is the K text for a stored message, as short as
// qmail-qmtpd's "ok 1234567890 qp 12345" (QMTP repeats it to every
// recipient, and on a slow line those bytes cost more than round trips):
// the key's seconds and its Q number, "ok 1765065600 Q42", which name the
// first file's key (TIME.PpidQnR...). The log line "maildir stored"
// carries the same text and the file's full path.
func shortReply(key string, now time.Time) string {
	q, r := strings.IndexByte(key, 'Q'), strings.IndexByte(key, 'R')
	dot := strings.IndexByte(key, '.')
	if dot <= 0 || q <= dot || r <= q {
		return "ok " + strconv.FormatInt(now.Unix(), 10)
	}
	return "ok " + key[:dot] + " " + key[q:r]
}

// ReplyUnwritableAddress answers an address the store refuses to write
// into a header line.
var ReplyUnwritableAddress = proto.D("sorry, I can't accept addresses like that (#5.1.3)")

// errTmpfileUnsupported is linkBatch.Create's answer on a file system
// without O_TMPFILE: the store falls back to Batch.
var errTmpfileUnsupported = errors.New("maildir: O_TMPFILE not supported")

// fileBatch is what deliver and the group commit need from Batch and
// linkBatch: Commit is Sync, Link, the fsync of new/, and Unlink if that
// failed; the group commit runs the steps itself, with Written in place
// of Sync when one syncfs(2) makes the files of a whole group durable.
type fileBatch interface {
	Create() (*os.File, error)
	Commit() ([]string, error)
	Sync() error
	Written() error
	Link() ([]string, error)
	Unlink()
	Abort()
}

// deliver stores the message for rcpts, every address already checked.
func (s *Store) deliver(ctx context.Context, d *storeDelivery, sender string, rcpts []string) (string, error) {
	if d.err != nil {
		return "", d.err
	}
	if d.spool != nil {
		if err := d.flushSpool(); err != nil {
			return "", err
		}
	}
	gs := s.prepare()
	// Taken before the first file is created: a syncfs failure from now
	// on may be this message's (see groupSync.failures).
	failures := gs.failures.Load()
	received := s.receivedLine(d.peer)
	b := newFileBatch(s.Dir)
	var head []byte
	for i, rcpt := range rcpts {
		if err := ctx.Err(); err != nil {
			b.Abort()
			return "", err
		}
		f, err := b.Create()
		if err == errTmpfileUnsupported && i == 0 {
			b = NewBatch(s.Dir) // this file system has no O_TMPFILE
			f, err = b.Create()
		}
		if err != nil {
			b.Abort()
			return "", fmt.Errorf("maildir: create: %w", err)
		}
		head = append(head[:0], "Return-Path: <"...)
		head = append(head, sender...)
		head = append(head, ">\nDelivered-To: "...)
		head = append(head, rcpt...)
		head = append(head, '\n')
		head = append(head, received...)
		if err := d.writeFile(f, head); err != nil {
			b.Abort()
			return "", fmt.Errorf("maildir: write file %d of %d: %w", i+1, len(rcpts), err)
		}
	}
	var paths []string
	var err error
	if s.alone {
		paths, err = commitAlone(b, s.Dir)
	} else {
		paths, err = s.group.commit(b, failures, gs)
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(paths[0]), nil
}

// writeFile writes the header lines and the message into f. From a spool
// file the copy is file to file (copy_file_range on Linux), so the message
// never passes through this process's memory.
func (d *storeDelivery) writeFile(f *os.File, head []byte) error {
	if d.spool == nil {
		if len(head)+len(d.mem) <= 64<<10 {
			buf := make([]byte, 0, len(head)+len(d.mem))
			buf = append(append(buf, head...), d.mem...)
			_, err := f.Write(buf)
			return err
		}
		if _, err := f.Write(head); err != nil {
			return err
		}
		_, err := f.Write(d.mem)
		return err
	}
	if _, err := f.Write(head); err != nil {
		return err
	}
	if _, err := d.spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(f, &io.LimitedReader{R: d.spool, N: d.size})
	if err != nil {
		return err
	}
	if n != d.size {
		return fmt.Errorf("spool holds %d bytes, want %d", n, d.size)
	}
	return nil
}

// receivedLine returns the Received header line (with its newline) for a
// message from peer.
func (s *Store) receivedLine(peer proto.Peer) []byte {
	return proto.AppendReceived(nil, peer, s.hostname(peer), s.now())
}

func (s *Store) hostname(peer proto.Peer) string {
	return proto.LocalName(s.Hostname, peer)
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// prepare decides, at the first delivery, how the store's groups are
// made durable: by one syncfs(2) where the file system is known to honour
// it (see group), else by each delivery's own fsyncs. The descriptor
// syncfs runs on is opened here, before any file of the store is
// written, so it reports every write-back error from then on.
func (s *Store) prepare() *groupSync {
	s.prepared.Do(func() {
		s.commits = groupSync{dir: s.Dir, syncDir: SyncDir, failures: &s.failures}
		if s.syncDir != nil {
			s.commits.syncDir = s.syncDir
		}
		switch {
		case s.syncFS != nil:
			s.commits.syncFS = s.syncFS
		case !s.PerFile:
			s.commits.syncFS = fileSystemSync(s.Dir)
		}
		how := "syncfs"
		if s.commits.syncFS == nil {
			how = "per file"
		}
		s.logger().Info("maildir group commit", "dir", s.Dir, "sync", how)
	})
	return &s.commits
}

func (s *Store) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// tempText is the Z text the client sees: the cause in qmail's words,
// without local paths.
func tempText(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "sorry, the mail store is full (#4.3.1)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "sorry, too many open files, try again later (#4.3.0)"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "sorry, the server is shutting down (#4.3.0)"
	}
	return "sorry, I couldn't store the message (#4.3.0)"
}

var _ proto.Backend = (*Store)(nil)
