package queue

import (
	"errors"
	"io"
	"path/filepath"
	"time"

	"qbox/proto"
	"qbox/proto/store/maildir"
)

// Maildir is a Source over a maildir of outgoing mail in serialmail's
// form, one file per recipient ("Return-Path: <sender>", "Delivered-To:
// PREFIXrecipient", the message): what flush-maildir reads, and the
// layout of the sendmail spool. A file is removed only through
// maildir.Entry.Remove (the file the scan saw, nothing else); the
// directories are fsync'd by Sync.
type Maildir struct {
	Dir    string
	Prefix string // maildir.ScanOptions.Prefix
	// Group makes one message of the files with the same sender and
	// identical content (maildir.GroupEntries), sent once with all their
	// recipients; otherwise each file is a message.
	Group bool
	// Select, when set, limits the run to the files it accepts (an
	// operator's `sendmail -qR...`): the rest, and malformed files, are
	// left untouched and unreported.
	Select func(*maildir.Entry) bool
	// Scanned, when set, sees each scan's result (the spool forgets the
	// records of files gone).
	Scanned func(*maildir.ScanResult)
}

// Lock takes the maildir's lock (maildir.TryLock).
func (s *Maildir) Lock() (func(), error) {
	l, err := maildir.TryLock(s.Dir)
	if err != nil {
		return nil, err
	}
	return func() { l.Unlock() }, nil
}

// Scan reads the maildir (removing stale tmp/ files).
func (s *Maildir) Scan(now time.Time) (*Scan, error) {
	res, err := maildir.Scan(s.Dir, maildir.ScanOptions{Prefix: s.Prefix, Now: now})
	if err != nil {
		return nil, err
	}
	if s.Scanned != nil {
		s.Scanned(res)
	}
	out := &Scan{}
	if s.Select == nil {
		for i := range res.Malformed {
			out.Broken = append(out.Broken, s.broken(&res.Malformed[i]))
		}
	}
	var entries []maildir.Entry
	for _, e := range res.Entries {
		if s.Select == nil || s.Select(&e) {
			entries = append(entries, e)
		}
	}
	var groups []maildir.Group
	if s.Group {
		groups = maildir.GroupEntries(entries)
	} else {
		groups = make([]maildir.Group, len(entries))
		for i, e := range entries {
			groups[i] = maildir.Group{Sender: e.Sender, Entries: []maildir.Entry{e}}
		}
	}
	for i := range groups {
		out.Messages = append(out.Messages, s.stored(&groups[i]))
	}
	return out, nil
}

// stored makes a group of files one message.
func (s *Maildir) stored(g *maildir.Group) *Stored {
	open := func(i int) (io.ReadCloser, error) {
		rd, f, err := g.Entries[i].OpenMessage()
		var bad maildir.Malformed
		if errors.As(err, &bad) {
			return nil, s.broken(&bad)
		}
		if err != nil {
			return nil, err
		}
		return readCloser{rd, f}, nil
	}
	m := &Stored{Sys: g, Reopen: open, Message: proto.Message{
		Sender:     g.Sender,
		Recipients: g.Recipients(),
		Size:       g.Entries[0].MessageSize(),
		Open:       func() (io.ReadCloser, error) { return open(0) },
	}}
	for _, e := range g.Entries {
		m.Entries = append(m.Entries, Entry{Name: e.Name, Queued: e.ModTime})
	}
	return m
}

// broken makes a malformed file a Broken item.
func (s *Maildir) broken(bad *maildir.Malformed) *Broken {
	return &Broken{Name: bad.Name, Store: s.Dir, Reason: bad.Reason, Size: bad.Size, Queued: bad.ModTime, Sys: bad,
		Open: func() (io.ReadCloser, error) {
			rd, f, err := bad.Open() // a symlink or FIFO is never opened
			if err != nil {
				return nil, err
			}
			return readCloser{rd, f}, nil
		}}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Entry returns the file of recipient i of m.
func (s *Maildir) Entry(m *Stored, i int) *maildir.Entry {
	return &m.Sys.(*maildir.Group).Entries[i]
}

// Done removes recipient i's file (the one the scan saw).
func (s *Maildir) Done(m *Stored, i int) error { return s.Entry(m, i).Remove() }

// Defer keeps the file; a maildir records nothing more.
func (s *Maildir) Defer(*Stored, int, string) {}

// Remove removes a malformed file (the one the scan saw).
func (s *Maildir) Remove(b *Broken) error { return b.Sys.(*maildir.Malformed).Remove() }

// Sync fsyncs new/ and cur/.
func (s *Maildir) Sync() error {
	var first error
	for _, sub := range []string{"new", "cur"} {
		if err := maildir.SyncDir(filepath.Join(s.Dir, sub)); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Left counts the files in new/ and cur/, malformed ones included.
func (s *Maildir) Left() (int, error) {
	res, err := maildir.Scan(s.Dir, maildir.ScanOptions{Prefix: s.Prefix, TmpMaxAge: -1})
	if err != nil {
		return 0, err
	}
	return len(res.Entries) + len(res.Malformed), nil
}
