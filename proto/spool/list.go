package spool

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"qbox/proto"
)

// WriteListing prints the spool for mailq: one line per queued file
// (queue time, age, message size, sender and recipient), then its last
// delivery error if one was recorded, then a summary. It returns how many
// files are queued. A spool another user could change (see Open) is
// refused rather than listed: what it holds may be theirs.
func (s *Spool) WriteListing(w io.Writer, now time.Time) (int, error) {
	if err := Check(s.Dir); err != nil {
		return 0, err
	}
	res, err := s.List()
	if err != nil {
		return 0, err
	}
	if len(res.Entries) == 0 && len(res.Malformed) == 0 {
		_, err := fmt.Fprintf(w, "Mail queue is empty (%s)\n", s.Dir)
		return 0, err
	}
	var size int64
	fmt.Fprintf(w, "%-19s %7s %9s  %s\n", "Queued", "Age", "Size", "Sender -> Recipient")
	for _, e := range res.Entries {
		size += e.MessageSize()
		sender := e.Sender
		fmt.Fprintf(w, "%-19s %7s %9d  <%s> -> <%s>\n",
			e.ModTime.Local().Format("2006-01-02 15:04:05"), Age(now.Sub(e.ModTime)), e.MessageSize(),
			proto.Printable(sender, 200), proto.Printable(e.Recipient, 200))
		fmt.Fprintf(w, "%-19s %7s %9s  file %s\n", "", "", "", filepath.Base(e.Name))
		if text, st := s.LastError(filepath.Base(e.Name)); text != "" {
			when := ""
			if st != nil {
				when = " (" + Age(now.Sub(st.ModTime())) + " ago)"
			}
			fmt.Fprintf(w, "%-19s %7s %9s  last error%s: %s\n", "", "", "", when, text)
		}
	}
	for _, m := range res.Malformed {
		// Its age, so a file nobody can send is seen to be getting old.
		queuedAt, age := "", ""
		if !m.ModTime.IsZero() {
			queuedAt, age = m.ModTime.Local().Format("2006-01-02 15:04:05"), Age(now.Sub(m.ModTime))
		}
		fmt.Fprintf(w, "%-19s %7s %9d  malformed %s: %s\n", queuedAt, age, m.Size, proto.Printable(m.Name, 200), proto.Printable(m.Reason, 200))
	}
	n := len(res.Entries) + len(res.Malformed)
	plural := "s"
	if n == 1 {
		plural = ""
	}
	_, err = fmt.Fprintf(w, "-- %d queued file%s (one per recipient), %d bytes, in %s\n", n, plural, size, s.Dir)
	return n, err
}

// Age formats a duration compactly for a listing: 42s, 5m, 3h12m, 2d4h.
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}
