package spool

// Queue management: the spool seen as messages rather than files. A
// message is the files of one group (maildir.GroupEntries: the same
// sender and byte-identical content, one file per recipient), the way the
// flush sends them. Its ID is the first 12 hex digits of SHA-256 over the
// sender and the content, so it stays the same while some of its
// recipients are delivered and others wait, and across runs.
//
// A held message's files live in DIR/hold/ (a maildir of its own: new/,
// cur/, err/), which the flush never scans; release moves them back.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"qbox/proto/store/maildir"
)

// Message is one queued message.
type Message struct {
	ID          string
	Sender      string
	Recipients  []string
	Held        bool
	Queued      time.Time // the oldest file's mtime
	Size        int64     // of the message, without the envelope lines
	LastError   string
	LastAttempt time.Time       // zero when never tried
	Entries     []maildir.Entry // the old layout's files (nil for a stored message)

	// Stored is set for a message in the stored layout (msg/ID, one
	// file whatever its recipients); Path is that file. Queued is then
	// when the user handed the message over (kept through the pickup).
	Stored bool
	Path   string
	// States is each recipient's state (stored messages only);
	// Recipients lists those not yet delivered or bounced.
	States      []RecipientState
	Attempts    int       // deliveries the server deferred (Z) so far
	NextAttempt time.Time // not retried before this (backoff), unless forced; zero: at once
	// Stuck is set when a recipient failed for good but no bounce could
	// be sent: the message stays until a person acts (the check is
	// CRITICAL about it).
	Stuck bool

	stored *stored
}

// Files are the message's files on disk.
func (m *Message) Files() []string {
	if m.Stored {
		return []string{m.Path}
	}
	var out []string
	for _, e := range m.Entries {
		out = append(out, e.Path)
	}
	return out
}

// Open returns the message's content (without the queue's envelope).
func (m *Message) Open() (io.Reader, io.Closer, error) {
	if m.stored != nil {
		return m.stored.open()
	}
	if len(m.Entries) == 0 {
		return nil, nil, errors.New("spool: the message has no file")
	}
	return m.Entries[0].OpenMessage()
}

// Counts is how many messages of a listing are in each state.
type Counts struct {
	Messages, Held, Deferred, Stuck, Malformed int
}

// Count counts the listing's messages by state.
func (l *Listing) Count() Counts {
	c := Counts{Messages: len(l.Messages), Malformed: len(l.Malformed)}
	for i := range l.Messages {
		m := &l.Messages[i]
		switch {
		case m.Held:
			c.Held++
		case m.Stuck:
			c.Stuck++
		case m.LastError != "":
			c.Deferred++
		}
	}
	return c
}

// Listing is the spool's messages, oldest first, and the files that are
// not messages.
type Listing struct {
	Messages  []Message
	Malformed []maildir.Malformed
}

// holdDir is where held messages wait.
func (s *Spool) holdDir() string { return filepath.Join(s.Dir, "hold") }

// Messages lists the spool's messages, held ones included. It changes
// nothing and takes no lock; a spool another user could change is
// refused (see Check).
func (s *Spool) Messages() (*Listing, error) {
	if err := Check(s.Dir); err != nil {
		return nil, err
	}
	out := &Listing{}
	for _, held := range []bool{false, true} {
		dir := s.Dir
		if held {
			dir = s.holdDir()
			if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err := checkMaildirTree(dir, false); err != nil {
				return nil, err
			}
		}
		if _, err := os.Lstat(filepath.Join(dir, "new")); errors.Is(err, os.ErrNotExist) {
			continue // nothing was ever queued
		}
		res, err := maildir.Scan(dir, maildir.ScanOptions{TmpMaxAge: -1})
		if err != nil {
			return nil, err
		}
		out.Malformed = append(out.Malformed, res.Malformed...)
		for _, g := range maildir.GroupEntries(res.Entries) {
			m := Message{Sender: g.Sender, Recipients: g.Recipients(), Held: held, Queued: g.ModTime(),
				Size: g.Entries[0].MessageSize(), Entries: g.Entries}
			id, err := messageID(&g.Entries[0])
			if err != nil {
				id = "unreadable"
			}
			m.ID = id
			for _, e := range g.Entries {
				text, st := lastError(dir, filepath.Base(e.Name))
				if strings.HasPrefix(text, "permanent failure:") {
					m.Stuck = true // the engine could not bounce it
				}
				if text != "" && (st == nil || !st.ModTime().Before(m.LastAttempt)) {
					m.LastError = text
					if st != nil {
						m.LastAttempt = st.ModTime()
					}
				}
			}
			out.Messages = append(out.Messages, m)
		}
	}
	st, bad, err := s.listStored()
	if err != nil {
		return nil, err
	}
	out.Malformed = append(out.Malformed, bad...)
	for _, m := range st {
		out.Messages = append(out.Messages, m.message())
	}
	sort.SliceStable(out.Messages, func(i, j int) bool { return out.Messages[i].Queued.Before(out.Messages[j].Queued) })
	return out, nil
}

// messageID hashes the sender and the content of a queued file.
func messageID(e *maildir.Entry) (string, error) {
	r, f, err := e.OpenMessage()
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	io.WriteString(h, e.Sender)
	h.Write([]byte{0})
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// lastError reads err/KEY of the maildir dir (the spool or its hold).
func lastError(dir, key string) (string, os.FileInfo) {
	p := filepath.Join(dir, "err", key)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return "", nil
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4096))
	return strings.TrimRight(string(b), "\n"), st
}

// Find returns the messages whose ID starts with id (at least 4
// characters, so a typo cannot select half the queue); an ID matching
// none is an error.
func (l *Listing) Find(id string) ([]*Message, error) {
	if len(id) < 4 {
		return nil, fmt.Errorf("message ID %q is too short (give at least 4 characters)", id)
	}
	var found []*Message
	for i := range l.Messages {
		if strings.HasPrefix(l.Messages[i].ID, strings.ToLower(id)) {
			found = append(found, &l.Messages[i])
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no queued message has the ID %q", id)
	}
	return found, nil
}

// ErrLocked is wrapped when another process holds the spool's lock (a
// run delivering it).
var ErrLocked = maildir.ErrLocked

// Lock takes the spool's lock, the one every flush takes, so a message is
// not moved or removed while a flush sends it.
func (s *Spool) Lock() (*maildir.Lock, error) {
	l, err := maildir.TryLock(s.Dir)
	if errors.Is(err, maildir.ErrLocked) {
		return nil, fmt.Errorf("a flush is running on %s; try again when it has finished: %w", s.Dir, err)
	}
	return l, err
}

// Hold moves a message's files (and their last errors) into hold/, where
// no flush looks. The caller holds the lock.
func (s *Spool) Hold(m *Message) error {
	if m.Held {
		return nil
	}
	if m.Stored {
		return s.setHeld(m, true)
	}
	hold := s.holdDir()
	for _, d := range []string{hold, filepath.Join(hold, "tmp"), filepath.Join(hold, "new"), filepath.Join(hold, "cur"), filepath.Join(hold, "err")} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("spool: %w", err)
		}
	}
	if err := checkMaildirTree(hold, true); err != nil {
		return err
	}
	return s.move(m, s.Dir, hold)
}

// Release moves a held message back where the flush finds it. The caller
// holds the lock.
func (s *Spool) Release(m *Message) error {
	if !m.Held {
		return nil
	}
	if m.Stored {
		return s.setHeld(m, false)
	}
	return s.move(m, s.holdDir(), s.Dir)
}

// move renames each file of m from the maildir from to the maildir to
// (same name under new/ or cur/), its err/ file with it, then fsyncs the
// directories it changed.
func (s *Spool) move(m *Message, from, to string) error {
	dirs := map[string]bool{}
	for _, e := range m.Entries {
		key := filepath.Base(e.Name)
		if err := os.Rename(filepath.Join(from, e.Name), filepath.Join(to, e.Name)); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		dirs[filepath.Dir(filepath.Join(from, e.Name))] = true
		dirs[filepath.Dir(filepath.Join(to, e.Name))] = true
		os.Rename(filepath.Join(from, "err", key), filepath.Join(to, "err", key)) // advisory
	}
	for d := range dirs {
		if err := maildir.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a message's files and their last errors. The caller
// holds the lock.
func (s *Spool) Delete(m *Message) error {
	if m.Stored {
		return s.removeStored(m.ID)
	}
	dir := s.Dir
	if m.Held {
		dir = s.holdDir()
	}
	dirs := map[string]bool{}
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := e.Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
		dirs[filepath.Dir(e.Path)] = true
		os.Remove(filepath.Join(dir, "err", filepath.Base(e.Name)))
	}
	for d := range dirs {
		if err := maildir.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// setHeld records a stored message as held or released in its state.
func (s *Spool) setHeld(m *Message, held bool) error {
	st, _, err := s.readState(m.ID)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	st.held = held
	return s.writeState(m.ID, st)
}
