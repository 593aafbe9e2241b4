package spool

// The stored layout: each message once, whatever its number of
// recipients, with a small state file for what happened to each of them.
//
//	DIR/msg/ID     qbox-queue 1          written once, never changed
//	               F<sender>
//	               S<submitted, Unix nanoseconds>
//	               E<why it was queued>  (optional)
//	               T<recipient>          one per recipient, in order
//	               <empty line>
//	               <the message>
//	DIR/state/ID   qbox-state 1          rewritten whole (tmp, fsync,
//	               A<attempts> <last> <next>   rename, fsync state/)
//	               H                     (held)
//	               R<index> <code> <time> <text>
//
// A recipient with no R line is pending. Codes: d delivered, b bounced
// (or its failure reported to the postmaster), z deferred (text: the
// last error), f failed for good but no bounce could be sent yet (the
// message is "stuck": `qbox queue check` is CRITICAL about it). A
// message whose recipients are all d or b is removed: msg/ID first (its
// directory fsync'd), then state/ID, so a crash leaves at worst a state
// file without its message, which the next listing removes.
//
// The old layout (one maildir file per recipient in new/, cur/) is still
// read, listed and delivered, so mail queued before an upgrade goes out.

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"qbox/proto"
	"qbox/proto/store/maildir"
)

const (
	storeMagic = "qbox-queue 1\n"
	stateMagic = "qbox-state 1\n"
	// maxStoredEnvelope bounds the envelope read from a stored message
	// (root wrote it, but a bound costs nothing): room for
	// MaxRecipientsLimit recipients of the longest address.
	maxStoredEnvelope = 64 << 20
	// maxStateFile bounds a state file read.
	maxStateFile = 64 << 20
)

// DefaultMaxRecipients is how many recipients one message may have by
// default (sendmail -O MaxRecipientsPerMessage=N, control/maxrecipients).
const DefaultMaxRecipients = 10000

// MaxRecipientsLimit is the most any setting may allow.
const MaxRecipientsLimit = 1000000

// ErrTooManyRecipients is wrapped when a message has more recipients
// than allowed: it is refused whole, never cut.
var ErrTooManyRecipients = errors.New("too many recipients")

// Recipient state codes in a state file.
const (
	StateDelivered = 'd'
	StateBounced   = 'b'
	StateDeferred  = 'z'
	StateFailed    = 'f'
)

// Retry backoff (Postfix's minimal_backoff_time and
// maximal_backoff_time): the first retry after a server's Z waits
// MinBackoff, each further one twice as long, never more than
// MaxBackoff. See README, "Retries".
const (
	MinBackoff = 5 * time.Minute
	MaxBackoff = 4000 * time.Second
)

// Backoff is how long to wait after the attempts-th deferral.
func Backoff(attempts int) time.Duration {
	if attempts <= 0 {
		return 0
	}
	d := MinBackoff
	for i := 1; i < attempts && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// RecipientState is what happened to one recipient of a stored message.
type RecipientState struct {
	Recipient string
	// Code is 0 (pending), StateDelivered, StateBounced,
	// StateDeferred or StateFailed.
	Code byte
	At   time.Time // of the last change; zero when pending
	Text string    // the last error (deferred, failed) or the reply
}

// storeState is a stored message's state file.
type storeState struct {
	attempts   int
	last, next time.Time
	held       bool
	rcpt       map[int]RecipientState
}

// stored is a message in the stored layout, its envelope read.
type stored struct {
	id         string
	path       string
	sender     string
	rcpts      []string
	submitted  time.Time
	queuedErr  string
	offset     int64 // where the message starts
	size       int64
	modTime    time.Time
	state      storeState
	stateFound bool
}

func (s *Spool) msgDir() string   { return filepath.Join(s.Dir, "msg") }
func (s *Spool) stateDir() string { return filepath.Join(s.Dir, "state") }

// storeDirs creates msg/ and state/ (Open calls it inside MkdirDurable).
func storeDirs(dir string, tighten bool) error {
	for _, sub := range []string{"msg", "state"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("spool: %w", err)
		}
		if err := checkDir(p, tighten); err != nil {
			return err
		}
	}
	return nil
}

// newID is 12 random hex digits, the length of the old layout's IDs.
func newID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// store writes one message durably: the file, fsync'd, under a
// temporary name in tmp/, then linked into msg/ under a fresh ID (link
// fails rather than replace a message of the same ID) and msg/ fsync'd.
// It returns the ID once the message is safe.
func (s *Spool) store(env proto.Envelope, submitted time.Time, msg io.ReaderAt, size int64, lastErr string) (string, error) {
	tmp, err := newID()
	if err != nil {
		return "", err
	}
	tmpPath := filepath.Join(s.Dir, "tmp", "store."+tmp)
	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(tmpPath)
	fail := func(err error) (string, error) {
		f.Close()
		return "", fmt.Errorf("spool: writing %s: %w", tmpPath, err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(storeMagic)
	w.WriteString("F" + env.Sender + "\n")
	fmt.Fprintf(w, "S%d\n", submitted.UnixNano())
	if lastErr = proto.Printable(lastErr, 2000); lastErr != "" {
		w.WriteString("E" + lastErr + "\n")
	}
	for _, r := range env.Recipients {
		w.WriteString("T" + r + "\n")
	}
	w.WriteString("\n")
	if err := copyMessageSync(w, f, msg, size); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("spool: writing %s: %w", tmpPath, err)
	}
	for range 10 {
		id, err := newID()
		if err != nil {
			return "", err
		}
		err = os.Link(tmpPath, filepath.Join(s.msgDir(), id))
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("spool: %w", err)
		}
		if err := maildir.SyncDir(s.msgDir()); err != nil {
			os.Remove(filepath.Join(s.msgDir(), id))
			return "", err
		}
		return id, nil
	}
	return "", errors.New("spool: no free message ID after 10 tries")
}

// readStored reads the envelope of msg/ID (opened without following a
// link; a regular file only).
func readStored(path string) (*stored, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return parseStored(f, path, st.Size(), st.ModTime())
}

// parseStored reads a stored message's envelope from r (the file at
// path, size bytes, modified at modTime).
func parseStored(r io.Reader, path string, size int64, modTime time.Time) (*stored, error) {
	m := &stored{id: filepath.Base(path), path: path, modTime: modTime}
	e, err := readEnvelopeLines(bufio.NewReaderSize(r, 64<<10), storeMagic, maxStoredEnvelope,
		errors.New("the envelope is too long"), errors.New("no queue file header"), false)
	if err != nil {
		return nil, err
	}
	m.sender, m.rcpts, m.queuedErr = e.sender, e.rcpts, e.lastErr
	if e.hasSubmitted {
		m.submitted = time.Unix(0, e.submitted)
	}
	off := e.offset
	if m.submitted.IsZero() {
		m.submitted = m.modTime
	}
	m.offset, m.size = off, size-off
	if m.size < 0 {
		return nil, errors.New("the file is shorter than its envelope")
	}
	return m, nil
}

// open returns the message of a stored file (after its envelope).
func (m *stored) open() (io.Reader, io.Closer, error) {
	f, err := os.OpenFile(m.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil || st.Size() != m.offset+m.size {
		f.Close()
		return nil, nil, errors.New("the queue file changed since it was read")
	}
	return io.NewSectionReader(f, m.offset, m.size), f, nil
}

// readState reads state/ID; a missing file is a fresh state.
func (s *Spool) readState(id string) (storeState, bool, error) {
	st := storeState{rcpt: map[int]RecipientState{}}
	f, err := os.OpenFile(filepath.Join(s.stateDir(), id), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return st, false, errors.New("state file is not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return st, false, err
	}
	st, err = parseState(b)
	return st, err == nil, err
}

// parseState reads a state file's bytes.
func parseState(b []byte) (storeState, error) {
	st := storeState{rcpt: map[int]RecipientState{}}
	if len(b) > maxStateFile || !strings.HasPrefix(string(b), stateMagic) {
		return st, errors.New("not a state file")
	}
	for _, l := range strings.Split(string(b[len(stateMagic):]), "\n") {
		if l == "" {
			continue
		}
		switch l[0] {
		case 'A':
			var a int
			var last, next int64
			if _, err := fmt.Sscanf(l[1:], "%d %d %d", &a, &last, &next); err == nil {
				st.attempts = a
				if last != 0 {
					st.last = time.Unix(0, last)
				}
				if next != 0 {
					st.next = time.Unix(0, next)
				}
			}
		case 'H':
			st.held = true
		case 'R':
			f := strings.SplitN(l[1:], " ", 4)
			if len(f) < 3 || len(f[1]) != 1 {
				continue
			}
			i, err1 := strconv.Atoi(f[0])
			at, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || i < 0 {
				continue
			}
			rs := RecipientState{Code: f[1][0], At: time.Unix(0, at)}
			if len(f) == 4 {
				rs.Text = f[3]
			}
			st.rcpt[i] = rs
		}
	}
	return st, nil
}

// writeState replaces state/ID durably: tmp/ file fsync'd, renamed,
// state/ fsync'd.
func (s *Spool) writeState(id string, st storeState) error {
	var b strings.Builder
	b.WriteString(stateMagic)
	ns := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixNano()
	}
	fmt.Fprintf(&b, "A%d %d %d\n", st.attempts, ns(st.last), ns(st.next))
	if st.held {
		b.WriteString("H\n")
	}
	idx := make([]int, 0, len(st.rcpt))
	for i := range st.rcpt {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		r := st.rcpt[i]
		fmt.Fprintf(&b, "R%d %c %d %s\n", i, r.Code, ns(r.At), proto.Printable(r.Text, 1000))
	}
	tmp := filepath.Join(s.Dir, "tmp", "state."+id)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = io.WriteString(f, b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.stateDir(), id))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: state of %s: %w", id, err)
	}
	return maildir.SyncDir(s.stateDir())
}

// removeStored removes a message whose recipients are all done: its
// file first (durably), then its state.
func (s *Spool) removeStored(id string) error {
	if err := os.Remove(filepath.Join(s.msgDir(), id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	if err := maildir.SyncDir(s.msgDir()); err != nil {
		return err
	}
	os.Remove(filepath.Join(s.stateDir(), id))
	return nil
}

// listStored reads every stored message with its state; files that are
// not messages are reported as malformed, state files without a message
// (a removal cut short) are removed.
func (s *Spool) listStored() ([]*stored, []maildir.Malformed, error) {
	names, err := readNames(s.msgDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	sort.Strings(names)
	var out []*stored
	var bad []maildir.Malformed
	live := map[string]bool{}
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(s.msgDir(), name)
		live[name] = true
		m, err := readStored(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			mal := maildir.Malformed{Path: p, Name: "msg/" + name, Reason: err.Error()}
			if st, err := os.Lstat(p); err == nil {
				mal.ModTime, mal.Size = st.ModTime(), st.Size()
			}
			bad = append(bad, mal)
			continue
		}
		m.state, m.stateFound, err = s.readState(name)
		if err != nil {
			m.state = storeState{rcpt: map[int]RecipientState{}}
		}
		out = append(out, m)
	}
	if snames, err := readNames(s.stateDir()); err == nil {
		for _, n := range snames {
			if !live[n] && !strings.HasPrefix(n, ".") {
				if fi, err := os.Lstat(filepath.Join(s.stateDir(), n)); err == nil && fi.Mode().IsRegular() {
					os.Remove(filepath.Join(s.stateDir(), n))
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].submitted.Before(out[j].submitted) })
	return out, bad, nil
}

// message is the listing's view of a stored message.
func (m *stored) message() Message {
	msg := Message{ID: m.id, Sender: m.sender, Held: m.state.held, Queued: m.submitted, Size: m.size,
		Stored: true, Path: m.path, Attempts: m.state.attempts, NextAttempt: m.state.next, stored: m}
	msg.LastAttempt = m.state.last
	for i, r := range m.rcpts {
		rs := m.state.rcpt[i]
		rs.Recipient = r
		msg.States = append(msg.States, rs)
		switch rs.Code {
		case StateDelivered, StateBounced:
			continue
		case StateFailed:
			msg.Stuck = true
		}
		msg.Recipients = append(msg.Recipients, r)
		if rs.Text != "" && (rs.Code == StateDeferred || rs.Code == StateFailed) && !rs.At.Before(msg.LastAttempt) {
			msg.LastError, msg.LastAttempt = rs.Text, rs.At
		}
	}
	if msg.LastError == "" {
		for _, rs := range msg.States {
			if (rs.Code == StateDeferred || rs.Code == StateFailed) && rs.Text != "" {
				msg.LastError = rs.Text
			}
		}
	}
	if msg.LastError == "" && m.queuedErr != "" {
		msg.LastError = m.queuedErr
		if msg.LastAttempt.IsZero() {
			msg.LastAttempt = m.submitted
		}
	}
	return msg
}

// CheckRecipients refuses a message with more than max recipients
// (max <= 0: DefaultMaxRecipients).
func CheckRecipients(n, max int) error {
	if max <= 0 {
		max = DefaultMaxRecipients
	}
	if n > max {
		return fmt.Errorf("spool: %d recipients, more than the %d one message may have: %w", n, max, ErrTooManyRecipients)
	}
	return nil
}

// ParseMaxRecipients reads a recipient limit (a flag's or a control
// file's): a whole number from 1 to MaxRecipientsLimit.
func ParseMaxRecipients(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > MaxRecipientsLimit {
		return 0, fmt.Errorf("recipient limit %q: want a whole number from 1 to %d", s, MaxRecipientsLimit)
	}
	return n, nil
}

// QueuedRecipient is one recipient still queued (not delivered, not
// bounced, not held), in either layout.
type QueuedRecipient struct {
	Recipient, LastError string
	Message              *Message
}

// Queued lists the recipients still queued, oldest message first, and
// the files that are not messages. A spool that does not exist holds
// none.
func (s *Spool) Queued() ([]QueuedRecipient, []maildir.Malformed, error) {
	if _, err := os.Lstat(s.Dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	l, err := s.Messages()
	if err != nil {
		return nil, nil, err
	}
	var out []QueuedRecipient
	for i := range l.Messages {
		m := &l.Messages[i]
		if m.Held {
			continue
		}
		if m.Stored {
			for _, rs := range m.States {
				if rs.Code == StateDelivered || rs.Code == StateBounced {
					continue
				}
				text := rs.Text
				if text == "" {
					text = m.LastError
				}
				out = append(out, QueuedRecipient{Recipient: rs.Recipient, LastError: text, Message: m})
			}
			continue
		}
		for _, e := range m.Entries {
			text, _ := s.LastError(filepath.Base(e.Name))
			out = append(out, QueuedRecipient{Recipient: e.Recipient, LastError: text, Message: m})
		}
	}
	return out, l.Malformed, nil
}

// Copy is the recipient's message as the old layout held it (and as a
// maildir reader sees it): Return-Path and Delivered-To, then the
// message. For tests and for reading mail out of the queue.
func (q QueuedRecipient) Copy() ([]byte, error) {
	r, c, err := q.Message.Open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return append([]byte("Return-Path: <"+q.Message.Sender+">\nDelivered-To: "+q.Recipient+"\n"), body...), nil
}
