// Package spool is the local queue a sendmail shim falls back to when no
// QMQP server takes a message right now, so a relay outage never loses
// mail.
//
// Layout: each message is stored once, whatever its recipients, in
// DIR/msg/ID, with what happened to each recipient in DIR/state/ID (see
// store.go). Mail queued by an older qbox, in the maildir form `qbox
// serve` writes and serialmail reads (one file per recipient), is still
// listed and delivered:
//
//	DIR/new/KEY      Return-Path: <sender>
//	                 Delivered-To: recipient
//	                 <the message>
//	DIR/err/KEY      the last delivery error for new/KEY, one line; its
//	                 mtime is when that attempt was made
//
// The old layout's error lives in a separate small file; it is advisory:
// losing it loses nothing but a line of `mailq` output. Directories are
// mode 0700 and files 0600, so other users cannot read queued mail.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"qbox/proto"
	"qbox/proto/store/maildir"
)

// SystemDir is the system queue's root (see SystemQueue): its drop
// directory takes any user's mail, its queue is root's.
const SystemDir = "/var/spool/qbox"

// Spool is an opened spool directory.
type Spool struct {
	Dir string
}

// Locate picks the spool directory this process delivers and lists:
// $QBOX_SPOOL, else for root the system queue's spool (SystemQueue's
// QueueDir), else ~/.qbox/spool (a user's mail queued where there was no
// system queue). Another user's mail in the system queue is root's to
// deliver, not theirs.
func Locate(getenv func(string) string) (string, error) {
	if d := getenv("QBOX_SPOOL"); d != "" {
		return d, nil
	}
	if os.Geteuid() == 0 {
		return System(getenv).QueueDir(), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("spool: no system queue usable and no home directory: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".qbox", "spool"), nil
}

// ErrUnsafe is wrapped when the spool directory is one another user
// could change: a symlink, owned by someone other than this process's
// effective user, or writable by group or others. Mail queued there could
// be read, removed or replaced by that user, so nothing is queued there,
// and the caller fails temporarily (sendmail 75, qmail tools 111).
var ErrUnsafe = errors.New("spool is not safe to use")

// Open creates the spool if needed (mode 0700) and returns it. It refuses
// (with ErrUnsafe, naming the directory and what is wrong) a spool, or a
// tmp/, new/, cur/ or err/ in it, that is a symlink, is owned by another
// user or is writable by group or others, and one reached through a
// directory another user could rename it out of.
//
// What it creates is made durable before it returns (maildir.MkdirDurable):
// a message queued into a new/ that a power cut could take away would be
// an exit 0 for nothing.
func Open(dir string) (*Spool, error) {
	err := maildir.MkdirDurable(dir, func() error {
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
		}
		if err := checkDir(dir, true); err != nil {
			return err
		}
		if err := checkParents(dir); err != nil {
			return err
		}
		for _, sub := range []string{"tmp", "new", "cur", "err"} {
			p := filepath.Join(dir, sub)
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("spool: %w", err)
			}
			if err := checkDir(p, true); err != nil {
				return err
			}
		}
		return storeDirs(dir, true)
	})
	if err != nil {
		return nil, err
	}
	return &Spool{Dir: dir}, nil
}

// Check reports, without creating or changing anything, whether dir and
// the subdirectories it has pass Open's checks.
func Check(dir string) error {
	if err := checkDir(dir, false); err != nil {
		return err
	}
	if err := checkParents(dir); err != nil {
		return err
	}
	return checkMaildirTree(dir, false)
}

// checkMaildirTree checks dir and those of its subdirectories tmp/, new/,
// cur/ and err/ that exist (the spool's and the hold maildir's alike).
func checkMaildirTree(dir string, tighten bool) error {
	if err := checkDir(dir, tighten); err != nil {
		return err
	}
	for _, sub := range []string{"tmp", "new", "cur", "err", "msg", "state"} {
		p := filepath.Join(dir, sub)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := checkDir(p, tighten); err != nil {
			return err
		}
	}
	return nil
}

// lstatRealDir returns dir's own status (links not followed), refusing a
// symbolic link or anything else that is not a directory.
func lstatRealDir(dir string) (os.FileInfo, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		return nil, unsafeDir(dir, "is a symbolic link")
	case !st.IsDir():
		return nil, unsafeDir(dir, "is not a directory")
	}
	return st, nil
}

func unsafeDir(dir, problem string) error {
	return fmt.Errorf("spool: %s %s: %w; nothing is queued there", dir, problem, ErrUnsafe)
}

// checkDir refuses dir unless it is a real directory (not a symlink)
// owned by the effective user and not writable by group or others. When
// tighten is set, a spool readable by others (made by hand) is made
// 0700, so other users cannot read queued mail.
func checkDir(dir string, tighten bool) error {
	st, err := lstatRealDir(dir)
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if euid := os.Geteuid(); int(sys.Uid) != euid {
			return unsafeDir(dir, fmt.Sprintf("is owned by uid %d, not by uid %d (this process)", sys.Uid, euid))
		}
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return unsafeDir(dir, fmt.Sprintf("is writable by group or others (mode %04o)", perm))
	} else if tighten && perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// checkParents refuses a spool whose parent directories another user
// could write: they could rename the spool away and put their own in its
// place. Each parent, on the path as given and with symlinks resolved,
// must belong to root or to the effective user, and be writable by group
// or others only with the sticky bit (as /tmp), which keeps others from
// renaming what is ours.
func checkParents(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	euid := os.Geteuid()
	for _, start := range []string{filepath.Dir(abs), resolved} {
		for p := start; ; p = filepath.Dir(p) {
			st, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			// A symlink itself cannot be changed, only replaced by
			// whoever may write its directory, which is the next one
			// checked; where it leads is checked on the resolved path.
			if st.Mode()&os.ModeSymlink == 0 {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != euid {
					return unsafeDir(dir, fmt.Sprintf("is inside %s, owned by uid %d (neither root nor this process)", p, sys.Uid))
				}
				if st.Mode().Perm()&0o022 != 0 && st.Mode()&os.ModeSticky == 0 {
					return unsafeDir(dir, fmt.Sprintf("is inside %s, writable by group or others (mode %04o)", p, st.Mode().Perm()))
				}
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	return nil
}

// maxAddress is the longest address whose envelope line Scan reads back.
const maxAddress = maildir.MaxEnvelopeLine - len("Return-Path: <>")

// ErrBadAddress is returned for an address that cannot be written into
// the envelope lines (a line break or NUL in it).
var ErrBadAddress = errors.New("spool: address contains a line break or NUL")

// Enqueue stores msg (size bytes) durably in the spool, once whatever
// the number of recipients (see store.go), submitted now. Only when it
// returns nil may the caller tell its own caller the message is safe.
// lastErr, when not empty, is recorded as the reason it was queued. It
// returns the message's file.
func (s *Spool) Enqueue(env proto.Envelope, msg io.ReaderAt, size int64, lastErr string) ([]string, error) {
	return s.EnqueueAt(env, time.Now(), msg, size, lastErr)
}

// EnqueueAt is Enqueue for a message the user handed over at submitted.
func (s *Spool) EnqueueAt(env proto.Envelope, submitted time.Time, msg io.ReaderAt, size int64, lastErr string) ([]string, error) {
	if len(env.Recipients) == 0 {
		return nil, errors.New("spool: no recipients")
	}
	// A line longer than maxAddress could not be read back: the file
	// would sit in the spool unsendable.
	if err := checkEnvelope(env); err != nil {
		return nil, err
	}
	id, err := s.store(env, submitted, msg, size, lastErr)
	if err != nil {
		return nil, err
	}
	return []string{filepath.Join(s.msgDir(), id)}, nil
}

func (s *Spool) errPath(key string) string { return filepath.Join(s.Dir, "err", key) }

// setError records the last delivery error for a queued file. It is
// best effort: written to a dotfile and renamed, never fsync'd, because
// it only informs mailq.
func (s *Spool) setError(key, text string) {
	text = proto.Printable(text, 2000)
	tmp := filepath.Join(s.Dir, "err", "."+key+".tmp")
	if err := os.WriteFile(tmp, []byte(text+"\n"), 0o600); err != nil {
		return
	}
	if os.Rename(tmp, s.errPath(key)) != nil {
		os.Remove(tmp)
	}
}

// LastError returns the recorded error for a queued file's key (its base
// name), and when it was recorded; "" when none.
func (s *Spool) LastError(key string) (string, os.FileInfo) {
	p := s.errPath(key)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", nil
	}
	st, _ := os.Stat(p)
	return strings.TrimRight(string(b), "\n"), st
}

func (s *Spool) clearError(key string) { os.Remove(s.errPath(key)) }

// cleanErrors removes error files whose message is gone (delivered by an
// older run that died between the two removals).
func (s *Spool) cleanErrors(live map[string]bool) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, "err"))
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
				os.Remove(filepath.Join(s.Dir, "err", name)) // an interrupted setError
			}
			continue
		}
		if !live[name] {
			os.Remove(filepath.Join(s.Dir, "err", name))
		}
	}
}

// List returns the queued files, oldest first, and the malformed ones.
// It takes no lock and changes nothing.
func (s *Spool) List() (*maildir.ScanResult, error) {
	return maildir.Scan(s.Dir, maildir.ScanOptions{TmpMaxAge: -1})
}
