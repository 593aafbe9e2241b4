package spool

// The system queue: one queue for every user of the host, without a
// setuid or setgid program, in the shape of Postfix's maildrop.
//
//	ROOT/            root, 0755      (/var/spool/qbox, $QBOX_SYSTEM_QUEUE)
//	ROOT/maildrop/   root, 1733      anyone may create a file; nobody but
//	                                 root may list it, and the sticky bit
//	                                 keeps each user's files their own
//	ROOT/queue/      root, 0700      the spool (tmp/ new/ cur/ err/) that
//	                                 root's flush delivers
//
// sendmail, run by any user, writes the message and its envelope into
// maildrop/ under a dot name (O_EXCL, O_NOFOLLOW, mode 0600), makes it
// durable and renames it to an unpredictable name. PickUp, run by root
// before each flush, opens each file without following links, takes only
// a regular file with one link, records its owner as the submitting uid
// (a Received line, as qmail-queue's "invoked by uid N"), checks the
// envelope (proto.CheckEnvelope) and queues it in queue/, then removes
// the drop file. Anything else found there (a symlink, a FIFO, a hard
// link, a directory, a file that is not a drop file) is removed and
// reported, never read as mail.

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"qbox/proto"
	"qbox/proto/qmail/control"
	"qbox/proto/store/maildir"
)

// SystemQueue is the system queue under Root.
type SystemQueue struct {
	Root string
	// MaxRecipients bounds a drop's recipients at pickup (a drop over
	// it is refused whole and reported); 0: DefaultMaxRecipients.
	MaxRecipients int
}

// System returns the system queue: $QBOX_SYSTEM_QUEUE, else SystemDir.
func System(getenv func(string) string) SystemQueue {
	q := SystemQueue{Root: SystemDir}
	if d := getenv("QBOX_SYSTEM_QUEUE"); d != "" {
		q.Root = d
	}
	q.MaxRecipients, _ = MaxRecipients(getenv) // unreadable: the default
	return q
}

// MaxRecipientsPath is the control file that sets the recipient limit.
func MaxRecipientsPath(getenv func(string) string) string {
	return control.Path(getenv, "maxrecipients")
}

// MaxRecipients is the recipient limit control/maxrecipients sets, else
// DefaultMaxRecipients.
func MaxRecipients(getenv func(string) string) (int, error) {
	line, err := control.FirstLine(MaxRecipientsPath(getenv))
	if err != nil {
		return DefaultMaxRecipients, err
	}
	if line == "" {
		return DefaultMaxRecipients, nil
	}
	n, err := ParseMaxRecipients(line)
	if err != nil {
		return DefaultMaxRecipients, fmt.Errorf("%s: %w", MaxRecipientsPath(getenv), err)
	}
	return n, nil
}

// DropDir is where any user's sendmail leaves a message.
func (q SystemQueue) DropDir() string { return filepath.Join(q.Root, "maildrop") }

// QueueDir is the spool root's flush delivers.
func (q SystemQueue) QueueDir() string { return filepath.Join(q.Root, "queue") }

// Create lays the system queue out as make install does: ROOT 0755,
// the maildrop 1733 (anyone may drop, nobody may list) and the queue
// 0700, all owned by the caller, who is root for a real one. Tests and
// throwaway roots use it; an existing directory is an error.
func (q SystemQueue) Create() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{q.Root, 0o755}, {q.DropDir(), 0o733 | os.ModeSticky}, {q.QueueDir(), 0o700}} {
		// Mkdir's mode passes through the umask; Chmod sets it whole.
		if err := os.Mkdir(d.path, 0o700); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// Exists reports whether the system queue has been set up (its drop
// directory exists); whether it is safe is CheckDropDir's question.
func (q SystemQueue) Exists() bool {
	_, err := os.Lstat(q.DropDir())
	return err == nil
}

// ErrNoSystemQueue is returned by PickUp when the system queue has not
// been set up.
var ErrNoSystemQueue = errors.New("spool: no system queue")

// CheckDropDir refuses a drop directory that is not a real directory
// owned by root with the sticky bit (without it, any user could remove
// or replace another's message), or one reached through directories a
// user other than root could change.
func CheckDropDir(dir string) error {
	st, err := lstatRealDir(dir)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSticky == 0 {
		return unsafeDir(dir, fmt.Sprintf("lacks the sticky bit (mode %04o; want 1733)", st.Mode().Perm()))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		return unsafeDir(dir, fmt.Sprintf("is owned by uid %d, not root", sys.Uid))
	}
	return checkParents(dir)
}

// dropMagic starts every drop file; the envelope lines follow (F sender,
// S the submission time in Unix nanoseconds, T recipients, an optional E
// with the reason it was queued), then an empty line, then the message.
// A drop without S (an older sendmail's) was submitted at its mtime.
const dropMagic = "qbox-maildrop 1\n"

// maxDropEnvelope bounds the envelope PickUp reads from one drop file
// (any user writes them; root reads them): 1 MiB, thousands of
// recipients.
const maxDropEnvelope = 1 << 20

// Drop writes a message for the system queue into dir (the drop
// directory) and returns the files' paths once each file and its name
// are durable. Any user may call it; the file is theirs (mode 0600) until
// root's PickUp moves it.
//
// Recipients that would make the envelope longer than PickUp reads go
// into further drop files, each with the whole message; when one cannot
// be written, those already written are removed and nothing is queued.
func Drop(dir string, env proto.Envelope, msg io.ReaderAt, size int64, lastErr string) ([]string, error) {
	if len(env.Recipients) == 0 {
		return nil, errors.New("spool: no recipients")
	}
	if err := checkEnvelope(env); err != nil {
		return nil, err
	}
	if err := CheckDropDir(dir); err != nil {
		return nil, err
	}
	lastErr = proto.Printable(lastErr, 2000)
	// What every file carries besides its recipients, with room to spare.
	fixed := len(dropMagic) + len(env.Sender) + len(lastErr) + 16
	var written []string
	submitted := time.Now()
	rcpts := env.Recipients
	for len(rcpts) > 0 {
		n, used := 0, fixed
		for n < len(rcpts) && (n == 0 || used+len(rcpts[n])+2 <= maxDropEnvelope) {
			used += len(rcpts[n]) + 2
			n++
		}
		path, err := dropOne(dir, proto.Envelope{Sender: env.Sender, Recipients: rcpts[:n]}, submitted, msg, size, lastErr)
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
			return nil, err
		}
		written = append(written, path)
		rcpts = rcpts[n:]
	}
	return written, nil
}

// dropOne writes one drop file.
func dropOne(dir string, env proto.Envelope, submitted time.Time, msg io.ReaderAt, size int64, lastErr string) (string, error) {
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	name := hex.EncodeToString(rnd[:])
	tmp := filepath.Join(dir, "."+name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	fail := func(err error) (string, error) {
		os.Remove(tmp)
		return "", fmt.Errorf("spool: writing %s: %w", tmp, err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(dropMagic)
	w.WriteString("F" + env.Sender + "\n")
	fmt.Fprintf(w, "S%d\n", submitted.UnixNano())
	for _, r := range env.Recipients {
		w.WriteString("T" + r + "\n")
	}
	if lastErr != "" {
		w.WriteString("E" + lastErr + "\n")
	}
	w.WriteString("\n")
	if err := copyMessageSync(w, f, msg, size); err != nil {
		return fail(err)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	// A user may not open the drop directory to fsync it (it is not
	// readable); syncing the file system makes the new name durable.
	if err := maildir.SyncFS(f); err != nil {
		return "", fmt.Errorf("spool: making %s durable: %w", final, err)
	}
	return final, nil
}

// checkEnvelope is Enqueue's envelope check: the address check, and no
// address too long for the spool's envelope lines.
func checkEnvelope(env proto.Envelope) error {
	if err := proto.CheckEnvelope(env); err != nil {
		if errors.Is(err, proto.ErrAddressBytes) {
			return fmt.Errorf("%w: %w", ErrBadAddress, err)
		}
		return fmt.Errorf("spool: %w", err)
	}
	for _, a := range append([]string{env.Sender}, env.Recipients...) {
		if len(a) > maxAddress {
			return fmt.Errorf("spool: an address of %d bytes is longer than the spool can hold (%d)", len(a), maxAddress)
		}
	}
	return nil
}

// Picked is a drop file PickUp moved into the queue.
type Picked struct {
	Name       string
	UID        uint32
	Sender     string
	Recipients int
	ID         string    // its ID in the queue
	Submitted  time.Time // when the user handed it over
	Bytes      int64     // what the queue's file holds
}

// Refused is an entry of the drop directory PickUp removed (or could not
// remove) without queuing it, and why.
type Refused struct {
	Name   string
	Reason string
}

// PickupResult says what PickUp did.
type PickupResult struct {
	Picked  []Picked
	Refused []Refused
	// Failed are the drops the queue could not take (a full disk): they
	// stay in the drop directory for the next run; PickUp's error says so.
	Failed []Refused
}

// staleDrop is how long a dot file (a drop being written) may stay
// before PickUp takes it for the leftover of a sendmail that died.
const staleDrop = 36 * time.Hour

// PickUp moves every finished drop file of the system queue into its
// queue, as described at the top of this file. It must run as root
// (only root may list the drop directory); it returns ErrNoSystemQueue
// when there is none, and maildir.ErrLocked (wrapped) when another
// PickUp is running. The flush calls it before it scans the queue.
func PickUp(q SystemQueue, now time.Time) (PickupResult, error) {
	var res PickupResult
	if !q.Exists() {
		return res, ErrNoSystemQueue
	}
	drop := q.DropDir()
	if err := CheckDropDir(drop); err != nil {
		return res, err
	}
	sp, err := Open(q.QueueDir())
	if err != nil {
		return res, err
	}
	d, err := os.OpenFile(drop, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return res, fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	// One PickUp at a time: an flock on the drop directory, which only
	// root can open.
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return res, fmt.Errorf("%s: %w", drop, maildir.ErrLocked)
		}
		return res, fmt.Errorf("spool: lock %s: %w", drop, err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return res, fmt.Errorf("spool: %w", err)
	}
	removed := false
	for _, name := range names {
		p := filepath.Join(drop, name)
		st, err := os.Lstat(p)
		if err != nil {
			continue // gone meanwhile
		}
		if strings.HasPrefix(name, ".") {
			// Being written, unless it is no regular file at all or
			// its writer died long ago.
			if st.Mode().IsRegular() && now.Sub(st.ModTime()) < staleDrop {
				continue
			}
			res.Refused = append(res.Refused, refuse(p, name, "an unfinished drop file, or not a file at all"))
			removed = true
			continue
		}
		picked, why, err := pickOne(sp, drop, name, now, q.MaxRecipients)
		if err != nil {
			// The queue cannot take it (a full disk): the file stays
			// for the next run; the others are still taken (a smaller
			// one may fit).
			res.Failed = append(res.Failed, Refused{Name: proto.Printable(name, 200), Reason: err.Error()})
			continue
		}
		if why != "" {
			res.Refused = append(res.Refused, refuse(p, name, why))
		} else {
			res.Picked = append(res.Picked, picked)
		}
		removed = true
	}
	if removed {
		if err := d.Sync(); err != nil {
			return res, fmt.Errorf("spool: fsync %s: %w", drop, err)
		}
	}
	if len(res.Failed) > 0 {
		return res, fmt.Errorf("%d drop file(s) could not be queued (first: %s: %s): %w", len(res.Failed), res.Failed[0].Name, res.Failed[0].Reason, ErrPickupFailed)
	}
	return res, nil
}

// ErrPickupFailed is wrapped by PickUp's error when some drops could not
// be queued (they stay for the next run; the others were taken).
var ErrPickupFailed = errors.New("pickup incomplete")

// refuse removes a drop directory entry that is not queued. os.Remove
// unlinks a symlink itself, never its target; a directory is removed
// only when empty.
func refuse(path, name, why string) Refused {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		why += "; not removed: " + err.Error()
	} else {
		why += "; removed"
	}
	return Refused{Name: proto.Printable(name, 200), Reason: why}
}

// pickOne queues one drop file and removes it; a non-empty reason says
// why it was not queued (the caller removes it); an error is the
// queue's, and the file stays.
func pickOne(sp *Spool, drop, name string, now time.Time, maxRcpt int) (Picked, string, error) {
	const flags = syscall.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_NOCTTY | syscall.O_CLOEXEC
	fd, err := syscall.Open(filepath.Join(drop, name), flags, 0)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return Picked{}, "a symbolic link: not followed, not delivered", nil
	case errors.Is(err, syscall.ENXIO):
		return Picked{}, "a socket or device: not read, not delivered", nil
	case err != nil:
		return Picked{}, "cannot open: " + err.Error(), nil
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return Picked{}, "cannot stat: " + err.Error(), nil
	}
	switch {
	case st.Mode&syscall.S_IFMT == syscall.S_IFDIR:
		return Picked{}, "a directory: not delivered", nil
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
		return Picked{}, "not a regular file (a FIFO, socket or device): not read, not delivered", nil
	case st.Nlink != 1:
		// A second name for a file elsewhere: whoever made the link
		// may not be able to read what it points to.
		return Picked{}, fmt.Sprintf("a file with %d links (a hard link to a file elsewhere): not read, not delivered", st.Nlink), nil
	}
	syscall.SetNonblock(fd, false)
	env, submitted, lastErr, offset, err := readDropEnvelope(f)
	if err != nil {
		return Picked{}, "not a drop file: " + err.Error(), nil
	}
	if err := checkEnvelope(env); err != nil {
		return Picked{}, "refused envelope: " + err.Error(), nil
	}
	if err := CheckRecipients(len(env.Recipients), maxRcpt); err != nil {
		return Picked{}, "refused: " + err.Error() + "; not delivered", nil
	}
	if submitted.IsZero() || submitted.After(now) {
		// An older sendmail's drop, or a clock the user set: its mtime,
		// never a time to come (it would never expire).
		submitted = time.Unix(st.Mtim.Unix())
		if submitted.After(now) {
			submitted = now
		}
	}
	received := fmt.Sprintf("Received: (qbox invoked by uid %d); %s\n", st.Uid, now.UTC().Format("2 Jan 2006 15:04:05 -0000"))
	body := io.NewSectionReader(f, offset, st.Size-offset)
	msg := prefixedReaderAt{head: []byte(received), rest: body}
	paths, err := sp.EnqueueAt(env, submitted, msg, int64(len(received))+body.Size(), lastErr)
	if err != nil {
		// Its owner may still write to it: a file that changed while
		// it was copied is refused, or it would stop every pickup.
		var now syscall.Stat_t
		if syscall.Fstat(fd, &now) != nil || now.Size != st.Size || now.Mtim != st.Mtim {
			return Picked{}, "changed while it was being queued: not delivered", nil
		}
		return Picked{}, "", err
	}
	// The file queued is the one to remove: not a name swapped in since.
	if cur, err := os.Lstat(filepath.Join(drop, name)); err == nil {
		if cs, ok := cur.Sys().(*syscall.Stat_t); ok && cs.Ino == st.Ino && cs.Dev == st.Dev {
			os.Remove(filepath.Join(drop, name))
		}
	}
	var bytes int64
	if fi, err := os.Stat(paths[0]); err == nil {
		bytes = fi.Size()
	}
	return Picked{Name: name, UID: st.Uid, Sender: env.Sender, Recipients: len(env.Recipients),
		ID: filepath.Base(paths[0]), Submitted: submitted, Bytes: bytes}, "", nil
}

// readDropEnvelope reads a drop file's envelope lines, each at most
// maildir.MaxEnvelopeLine bytes, and returns where the message starts.
func readDropEnvelope(f io.Reader) (proto.Envelope, time.Time, string, int64, error) {
	e, err := readEnvelopeLines(bufio.NewReaderSize(f, 4096), dropMagic, maxDropEnvelope,
		fmt.Errorf("the envelope is longer than %d bytes", maxDropEnvelope), errors.New("no drop file header"), true)
	if err != nil {
		return proto.Envelope{}, time.Time{}, "", 0, err
	}
	var submitted time.Time
	if e.hasSubmitted {
		submitted = time.Unix(0, e.submitted)
	}
	return proto.Envelope{Sender: e.sender, Recipients: e.rcpts}, submitted, e.lastErr, e.offset, nil
}

// prefixedReaderAt reads head, then rest.
type prefixedReaderAt struct {
	head []byte
	rest io.ReaderAt
}

func (p prefixedReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < int64(len(p.head)) {
		n := copy(b, p.head[off:])
		if n == len(b) {
			return n, nil
		}
		m, err := p.rest.ReadAt(b[n:], 0)
		return n + m, err
	}
	return p.rest.ReadAt(b, off-int64(len(p.head)))
}

// Where says where Submit queued a message, for the note sendmail
// prints or logs.
type Where struct {
	Dir    string // the spool or the drop directory
	System bool   // the system queue: root's flush delivers it
}

func (w Where) String() string {
	if w.System {
		return "the system queue (" + w.Dir + "); root's `sendmail -q` delivers it"
	}
	return w.Dir + "; `sendmail -q` delivers it"
}

// Submit queues a message that could not be sent now: into $QBOX_SPOOL
// when set, else into the system queue when it exists (any user; root
// too, so every message carries its uid), else root's straight into the
// system queue's spool, else into ~/.qbox/spool. When the system queue
// exists but refuses the message, the per-user spool is tried before
// giving up; the error then names both.
func Submit(getenv func(string) string, env proto.Envelope, msg io.ReaderAt, size int64, lastErr string) (Where, error) {
	if d := getenv("QBOX_SPOOL"); d != "" {
		return enqueueIn(d, env, msg, size, lastErr)
	}
	q := System(getenv)
	var sysErr error
	if q.Exists() {
		if paths, err := Drop(q.DropDir(), env, msg, size, lastErr); err == nil {
			noteDrops(getenv, q, paths) // the maildrop is not listable: the user's note
			return Where{Dir: q.Root, System: true}, nil
		} else if errors.Is(err, ErrBadAddress) {
			return Where{}, err // no other queue would take it either
		} else {
			sysErr = fmt.Errorf("system queue: %w", err)
		}
	}
	dir, err := Locate(getenv)
	if err == nil {
		var w Where
		w, err = enqueueIn(dir, env, msg, size, lastErr)
		if err == nil {
			return w, nil
		}
	}
	if sysErr != nil {
		return Where{}, fmt.Errorf("%v; and %v", sysErr, err)
	}
	return Where{}, err
}

func enqueueIn(dir string, env proto.Envelope, msg io.ReaderAt, size int64, lastErr string) (Where, error) {
	sp, err := Open(dir)
	if err != nil {
		return Where{}, err
	}
	if _, err := sp.Enqueue(env, msg, size, lastErr); err != nil {
		return Where{}, err
	}
	return Where{Dir: dir}, nil
}

// DropsWaiting counts the finished drop files in the system queue's drop
// directory; only root may list it (0 otherwise).
func DropsWaiting(q SystemQueue) int {
	names, err := readNames(q.DropDir())
	if err != nil {
		return 0
	}
	n := 0
	for _, name := range names {
		if !strings.HasPrefix(name, ".") {
			n++
		}
	}
	return n
}

func readNames(dir string) ([]string, error) {
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// AdoptLegacy moves mail that a qbox older than the system queue left in
// root's old spool (the system queue's root itself: ROOT/new, ROOT/cur,
// their err/ files) into the queue, so an upgrade strands nothing. It
// does nothing when there is no ROOT/new; it refuses a root directory
// that fails Check. It returns how many files it moved.
func AdoptLegacy(q SystemQueue) (int, error) {
	old := q.Root
	if st, err := os.Lstat(filepath.Join(old, "new")); err != nil || !st.IsDir() {
		return 0, nil
	}
	if err := Check(old); err != nil {
		return 0, err
	}
	lock, err := maildir.TryLock(old) // an old flush still running
	if err != nil {
		return 0, err
	}
	defer lock.Unlock()
	sp, err := Open(q.QueueDir())
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, sub := range []string{"new", "cur"} {
		names, err := readNames(filepath.Join(old, sub))
		if err != nil {
			return moved, fmt.Errorf("spool: %w", err)
		}
		for _, name := range names {
			if strings.HasPrefix(name, ".") {
				continue
			}
			if err := os.Rename(filepath.Join(old, sub, name), filepath.Join(sp.Dir, "new", name)); err != nil {
				return moved, fmt.Errorf("spool: %w", err)
			}
			os.Rename(filepath.Join(old, "err", name), sp.errPath(name)) // advisory
			moved++
		}
	}
	if moved > 0 {
		if err := maildir.SyncDir(filepath.Join(sp.Dir, "new")); err != nil {
			return moved, err
		}
	}
	for _, sub := range []string{"new", "cur", "tmp", "err"} {
		os.Remove(filepath.Join(old, sub)) // only when empty
	}
	return moved, nil
}
