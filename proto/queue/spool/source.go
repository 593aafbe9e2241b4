package spool

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"qbox/proto/queue"
	"qbox/proto/store/maildir"
)

// Source is the spool as the queue engine (proto/queue) delivers it: the
// files of one sender with the same content are one message with all
// their recipients, the operator's selection (nil: all) is applied file
// by file, and the engine's verdicts are kept for mailq: a recipient
// deferred gets its last error in err/, one delivered or bounced loses
// it. The spool delivers nothing itself: sendmail -q, inject --flush and
// qbox queue flush run queue.Run over this source.
//
// Stored messages (msg/ID, the layout the spool writes now) come first,
// then the old layout's files (new/, cur/: mail queued before an
// upgrade). A stored message the server deferred (Z) backs off
// (Backoff): it is not offered again before its next attempt is due,
// unless a selection names it.
func (s *Spool) Source(sel *Selection) queue.Source {
	return s.SourceForce(sel, false)
}

// SourceForce is Source; force also offers the messages that are backing
// off (an operator's qbox queue flush).
func (s *Spool) SourceForce(sel *Selection, force bool) queue.Source {
	src := &source{sp: s, st: &storedRun{sp: s, sel: sel, force: force, now: time.Now,
		touched: map[string]*stored{}, serverZ: map[string]bool{}, bumped: map[string]bool{}}}
	src.Maildir = queue.Maildir{Dir: s.Dir, Group: true, Scanned: src.scanned}
	if sel != nil {
		src.Select = sel.Match
	}
	return src
}

type source struct {
	queue.Maildir
	sp *Spool
	st *storedRun
}

func (s *source) Scan(now time.Time) (*queue.Scan, error) {
	out := &queue.Scan{}
	if err := s.st.scan(now, out); err != nil {
		return nil, err
	}
	legacy, err := s.Maildir.Scan(now)
	if err != nil {
		return nil, err
	}
	out.Messages = append(out.Messages, legacy.Messages...)
	out.Broken = append(out.Broken, legacy.Broken...)
	return out, nil
}

func (s *source) Bounced(m *queue.Stored, i int, note string) {
	if ref, ok := m.Sys.(*storedRef); ok {
		s.st.bounced(ref, i, note)
	}
}

func (s *source) ServerDeferred(m *queue.Stored, i int) {
	if ref, ok := m.Sys.(*storedRef); ok {
		s.st.serverZ[ref.m.id] = true
	}
}

func (s *source) Remove(b *queue.Broken) error {
	if sb, ok := b.Sys.(*storedBad); ok {
		return s.st.remove(sb)
	}
	return s.Maildir.Remove(b)
}

func (s *source) Sync() error {
	err := s.st.sync()
	if e := s.Maildir.Sync(); err == nil {
		err = e
	}
	return err
}

func (s *source) Left() (int, error) {
	n, err := s.st.left()
	if err != nil {
		return 0, err
	}
	l, err := s.Maildir.Left()
	return n + l, err
}

// scanned forgets the errors of files gone (delivered by an older run
// that died between the two removals).
func (s *source) scanned(res *maildir.ScanResult) {
	live := map[string]bool{}
	for _, e := range res.Entries {
		live[filepath.Base(e.Name)] = true
	}
	s.sp.cleanErrors(live)
}

func (s *source) Done(m *queue.Stored, i int) error {
	if ref, ok := m.Sys.(*storedRef); ok {
		s.st.done(ref, i)
		return nil
	}
	key := filepath.Base(m.Entries[i].Name)
	err := s.Maildir.Done(m, i)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// The server has the message; this file would send it again.
		s.sp.setError(key, "delivered, but the file could not be removed (it will be sent again next run): "+err.Error())
		return err
	}
	s.sp.clearError(key)
	return err
}

func (s *source) Defer(m *queue.Stored, i int, reason string) {
	if ref, ok := m.Sys.(*storedRef); ok {
		s.st.deferred(ref, i, reason)
		return
	}
	s.sp.setError(filepath.Base(m.Entries[i].Name), reason)
}
