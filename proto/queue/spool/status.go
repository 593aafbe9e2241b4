package spool

// The queue's liveness, for monitoring (qbox queue check and metrics):
// when the runner last completed a pickup and last delivered a message,
// and what waits in the maildrop.
//
//	DIR/status/pickup     the time of the last completed pickup of the
//	                      system queue's maildrop (RFC 3339, one line)
//	DIR/status/delivery   the time a flush last had a message accepted
//
// Each stamp is a small file replaced atomically (written under a
// temporary name, then renamed), never fsync'd: losing one to a power cut
// loses a line of monitoring until the next run writes it again, never
// mail. The flush and the pickup ignore DIR/status/.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Stamp names one of the liveness stamps.
type Stamp string

const (
	// StampPickup is the last completed pickup of the maildrop.
	StampPickup Stamp = "pickup"
	// StampDelivery is the last message a flush delivered (K).
	StampDelivery Stamp = "delivery"
)

// maxStamp bounds what LastStamp reads: an RFC 3339 time and a newline.
const maxStamp = 64

func (s *Spool) statusDir() string { return filepath.Join(s.Dir, "status") }

// Record writes the stamp what with time t. The spool must exist (Open).
func (s *Spool) Record(what Stamp, t time.Time) error {
	dir := s.statusDir()
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("spool: %w", err)
	}
	if err := checkDir(dir, true); err != nil {
		return err
	}
	// CreateTemp's O_EXCL never follows a link planted under its name;
	// the rename replaces whatever has the stamp's name, a link itself
	// rather than its target.
	f, err := os.CreateTemp(dir, "."+string(what)+".*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = f.WriteString(t.UTC().Format(time.RFC3339Nano) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, string(what)))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("spool: recording the %s time: %w", what, err)
	}
	return nil
}

// LastStamp reads the stamp what: the zero time, and no error, when it
// was never written.
func (s *Spool) LastStamp(what Stamp) (time.Time, error) {
	p := filepath.Join(s.statusDir(), string(what))
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return time.Time{}, fmt.Errorf("spool: %s is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStamp+1))
	if err != nil {
		return time.Time{}, fmt.Errorf("spool: %w", err)
	}
	t, err := ParseStamp(b)
	if err != nil {
		return time.Time{}, fmt.Errorf("spool: %s: %w", p, err)
	}
	return t, nil
}

// ParseStamp reads a stamp file's content: one RFC 3339 time, with or
// without a final newline, at most maxStamp bytes.
func ParseStamp(b []byte) (time.Time, error) {
	if len(b) > maxStamp {
		return time.Time{}, errors.New("a stamp longer than a time")
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSuffix(string(b), "\n"))
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time")
	}
	return t, nil
}

// RecordPickup stamps a completed pickup of q's maildrop into its queue
// (StampPickup), for qbox queue check's --crit-stale and the metrics.
// It is advisory: a stamp that cannot be written loses a line of
// monitoring, never mail.
func (q SystemQueue) RecordPickup(now time.Time) {
	if sp, err := Open(q.QueueDir()); err == nil {
		sp.Record(StampPickup, now)
	}
}

// DropStats is what waits in the system queue's maildrop.
type DropStats struct {
	Count  int       // finished drop files (and anything else a pickup would take or refuse)
	Oldest time.Time // the oldest one's modification time (when sendmail wrote it); zero when none
}

// Drops counts what waits in the maildrop for a pickup. Only root may
// list the maildrop: anyone else gets the error (os.ErrPermission).
// Files still being written (dot names) are not counted.
func (q SystemQueue) Drops() (DropStats, error) {
	var st DropStats
	names, err := readNames(q.DropDir())
	if err != nil {
		return st, fmt.Errorf("spool: %w", err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		fi, err := os.Lstat(filepath.Join(q.DropDir(), name))
		if err != nil {
			continue // picked up meanwhile
		}
		st.Count++
		if t := fi.ModTime(); st.Oldest.IsZero() || t.Before(st.Oldest) {
			st.Oldest = t
		}
	}
	return st, nil
}
