package spool

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"qbox/proto"
	"qbox/proto/queue"
)

// The stored layout as the queue engine delivers it (see Source): each
// stored message is one package with its recipients still to deliver;
// the engine's verdicts are kept in memory and written to state/ID at
// Sync (a message all of whose recipients are done is removed instead).

// storedRef is a stored message as the engine sees it: recipient i of
// the package is m.rcpts[idx[i]].
type storedRef struct {
	m   *stored
	idx []int
}

// storedBad is a stored file that cannot be read.
type storedBad struct{ path, id string }

// storedRun is the stored layout's part of one run.
type storedRun struct {
	sp      *Spool
	sel     *Selection
	force   bool
	now     func() time.Time
	touched map[string]*stored // changed this run, to write at Sync
	serverZ map[string]bool    // deferred by a server this run: back off
	bumped  map[string]bool    // backoff already lengthened this run
}

func (r *storedRun) scan(now time.Time, out *queue.Scan) error {
	msgs, bad, err := r.sp.listStored()
	if err != nil {
		return err
	}
	if r.sel == nil {
		for _, b := range bad {
			b := b
			out.Broken = append(out.Broken, &queue.Broken{Name: b.Name, Store: r.sp.Dir, Reason: b.Reason, Size: b.Size,
				Queued: b.ModTime, Sys: &storedBad{path: b.Path, id: filepath.Base(b.Path)},
				Open: func() (io.ReadCloser, error) {
					return os.OpenFile(b.Path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
				}})
		}
	}
	force := r.force || r.sel != nil
	for _, m := range msgs {
		if cur, ok := r.touched[m.id]; ok {
			m = cur // this run's verdicts, not yet written
		}
		if m.state.held {
			continue
		}
		ref := &storedRef{m: m}
		var rcpts []string
		for i, rc := range m.rcpts {
			switch m.state.rcpt[i].Code {
			case StateDelivered, StateBounced:
				continue
			}
			if r.sel != nil && !r.sel.matchStored(m, rc) {
				continue
			}
			ref.idx = append(ref.idx, i)
			rcpts = append(rcpts, rc)
		}
		if len(rcpts) == 0 || (!force && now.Before(m.state.next)) {
			continue // nothing to send, or backing off after a Z
		}
		st := &queue.Stored{Sys: ref, Message: proto.Message{Sender: m.sender, Recipients: rcpts, Size: m.size,
			Open: func() (io.ReadCloser, error) {
				rd, c, err := m.open()
				if err != nil {
					return nil, &queue.Broken{Name: "msg/" + m.id, Store: r.sp.Dir, Reason: err.Error(), Queued: m.submitted,
						Sys: &storedBad{path: m.path, id: m.id}}
				}
				return readCloser{rd, c}, nil
			}}}
		for _, i := range ref.idx {
			st.Entries = append(st.Entries, queue.Entry{Name: fmt.Sprintf("msg/%s#%d", m.id, i), Queued: m.submitted})
		}
		out.Messages = append(out.Messages, st)
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// set records recipient i's new state, to be written at Sync.
func (r *storedRun) set(ref *storedRef, i int, rs RecipientState) {
	m := ref.m
	if m.state.rcpt == nil {
		m.state.rcpt = map[int]RecipientState{}
	}
	m.state.rcpt[ref.idx[i]] = rs
	m.state.last = rs.At
	r.touched[m.id] = m
}

func (r *storedRun) done(ref *storedRef, i int) {
	if ref.m.state.rcpt[ref.idx[i]].Code == StateBounced {
		return // bounced this run (Bounced came first): not delivered
	}
	r.set(ref, i, RecipientState{Code: StateDelivered, At: r.now()})
}

func (r *storedRun) bounced(ref *storedRef, i int, note string) {
	r.set(ref, i, RecipientState{Code: StateBounced, At: r.now(), Text: note})
}

func (r *storedRun) deferred(ref *storedRef, i int, reason string) {
	code := byte(StateDeferred)
	if strings.HasPrefix(reason, "permanent failure:") {
		code = StateFailed // no bounce could be sent: stuck
	}
	r.set(ref, i, RecipientState{Code: code, At: r.now(), Text: reason})
}

// sync writes the state of every message changed this run (each state
// file durably), or removes a message whose recipients are all done.
func (r *storedRun) sync() error {
	var first error
	now := r.now()
	for id, m := range r.touched {
		if r.serverZ[id] && !r.bumped[id] {
			// Postfix's backoff, once per run whatever the recipients.
			r.bumped[id] = true
			m.state.attempts++
			m.state.next = now.Add(Backoff(m.state.attempts))
		}
		done := true
		for i := range m.rcpts {
			if c := m.state.rcpt[i].Code; c != StateDelivered && c != StateBounced {
				done = false
				break
			}
		}
		var err error
		if done {
			err = r.sp.removeStored(id)
		} else {
			err = r.sp.writeState(id, m.state)
		}
		if err != nil && first == nil {
			first = err
		}
		if err == nil {
			delete(r.touched, id)
		}
	}
	return first
}

// left counts the recipients of stored messages still to deliver (held
// ones aside) and the stored files that are not messages.
func (r *storedRun) left() (int, error) {
	msgs, bad, err := r.sp.listStored()
	if err != nil {
		return 0, err
	}
	n := len(bad)
	for _, m := range msgs {
		if m.state.held {
			continue
		}
		for i := range m.rcpts {
			if c := m.state.rcpt[i].Code; c != StateDelivered && c != StateBounced {
				n++
			}
		}
	}
	return n, nil
}

func (r *storedRun) remove(b *storedBad) error {
	return r.sp.removeStored(b.id)
}

// HasMail reports whether the spool at dir holds any message, in either
// layout (held ones included). A spool that does not exist holds none.
func HasMail(dir string) bool {
	for _, sub := range []string{"new", "cur", "msg", "hold/new", "hold/cur"} {
		names, err := readNames(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, n := range names {
			if !strings.HasPrefix(n, ".") {
				return true
			}
		}
	}
	return false
}
