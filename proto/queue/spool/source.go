package spool

import (
	"errors"
	"os"
	"path/filepath"

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
func (s *Spool) Source(sel *Selection) queue.Source {
	src := &source{sp: s}
	src.Maildir = queue.Maildir{Dir: s.Dir, Group: true, Scanned: src.scanned}
	if sel != nil {
		src.Select = sel.Match
	}
	return src
}

type source struct {
	queue.Maildir
	sp *Spool
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
	s.sp.setError(filepath.Base(m.Entries[i].Name), reason)
}
