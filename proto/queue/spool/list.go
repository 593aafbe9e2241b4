package spool

import (
	"fmt"
	"io"
	"time"

	"qbox/proto"
)

// WriteListing prints the spool for mailq and sendmail -bp, in
// sendmail's and Postfix's layout: per message its ID (with '!' when
// held), size, arrival time and sender, its last delivery error in
// parentheses, then its recipients; files that are not messages after
// them; then a summary. It returns how many messages are queued. A spool
// another user could change (see Open) is refused rather than listed:
// what it holds may be theirs.
func (s *Spool) WriteListing(w io.Writer, now time.Time) (int, error) {
	l, err := s.Messages()
	if err != nil {
		return 0, err
	}
	if len(l.Messages) == 0 && len(l.Malformed) == 0 {
		_, err := fmt.Fprintf(w, "Mail queue is empty (%s)\n", s.Dir)
		return 0, err
	}
	const indent = "                                          "
	var size int64
	fmt.Fprintf(w, "%-13s %8s %-20s %s\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	for _, m := range l.Messages {
		size += m.Size
		id := m.ID
		if m.Held {
			id += "!"
		}
		sender := m.Sender
		if sender == "" {
			sender = "MAILER-DAEMON"
		}
		fmt.Fprintf(w, "%-13s %8d %-20s %s\n", id, m.Size, m.Queued.Local().Format("Mon Jan _2 15:04:05"), proto.Printable(sender, 200))
		if m.Held {
			fmt.Fprintf(w, "%s(held: release it with qbox queue release %s)\n", indent, m.ID)
		}
		if m.LastError != "" {
			when := ""
			if !m.LastAttempt.IsZero() {
				when = " " + Age(now.Sub(m.LastAttempt)) + " ago"
			}
			fmt.Fprintf(w, "%s(last error%s: %s)\n", indent, when, proto.Printable(m.LastError, 500))
		}
		for _, r := range m.Recipients {
			fmt.Fprintf(w, "%s%s\n", indent, proto.Printable(r, 200))
		}
		fmt.Fprintln(w)
	}
	for _, m := range l.Malformed {
		// Its age, so a file nobody can send is seen to be getting old.
		age := ""
		if !m.ModTime.IsZero() {
			age = Age(now.Sub(m.ModTime)) + " old"
		}
		fmt.Fprintf(w, "%-13s %8d %-20s malformed %s: %s\n", "-", m.Size, age, proto.Printable(m.Name, 200), proto.Printable(m.Reason, 200))
	}
	n := len(l.Messages)
	plural := "s"
	if n == 1 {
		plural = ""
	}
	_, err = fmt.Fprintf(w, "-- %d Kbytes in %d Request%s (%s).\n", (size+1023)/1024, n, plural, s.Dir)
	return n + len(l.Malformed), err
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
