package queue

import (
	"log/slog"
	"strings"

	"qbox/proto"
)

// Logger renders a run's outcomes as log lines, one per message (the
// recipients that travelled together and met the same fate), for the
// sendmail spool's flushes (sendmail -q, inject --flush): delivered and
// bounced at Info, deferred and kept failures at Warn, a delivered file
// that could not be removed at Error. Pass Outcome to Events.Outcome and
// call Done after Run.
type Logger struct {
	Log *slog.Logger // nil discards

	// The line being gathered.
	stored *Stored
	o      Outcome
	rcpts  []string
	// NotStarted counts the recipients left untried because the run was
	// interrupted.
	NotStarted int
}

func (l *Logger) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

// Outcome logs o, gathering the recipients of one message into one line.
func (l *Logger) Outcome(o Outcome) {
	if o.Stored == nil || o.Stored != l.stored || o.Status != l.o.Status || o.NotStarted {
		l.flushLine()
	}
	switch {
	case o.Status == Malformed:
		l.log().Warn("spool: malformed file left in place", "file", o.File, "reason", o.Note)
	case o.Status == Succeeded && o.Note != "":
		// The server has the message; this file would send it again.
		l.log().Error("spool: cannot remove a delivered file: it will be delivered twice", "file", o.File, "err", o.Note)
	case o.NotStarted:
		l.NotStarted++
	}
	if o.Stored == nil || o.NotStarted {
		return
	}
	l.stored, l.o = o.Stored, o
	l.rcpts = append(l.rcpts, o.Recipient)
}

func (l *Logger) flushLine() {
	if l.rcpts == nil {
		return
	}
	o, rcpts, log := l.o, strings.Join(l.rcpts, ","), l.log()
	switch o.Status {
	case Succeeded:
		log.Info("spool: delivered", "sender", o.Sender, "recipients", rcpts, "reply", proto.Printable(o.Reply, 200))
	case Bounced, Discarded:
		log.Info("spool: bounced", "sender", o.Sender, "recipients", rcpts, "note", o.Note)
	case Deferred:
		log.Warn("spool: deferred", "sender", o.Sender, "recipients", rcpts, "err", o.Reason)
	case Failed:
		log.Warn("spool: bounce failed, message kept", "sender", o.Sender, "recipients", rcpts, "err", o.Reason)
	}
	l.rcpts = nil
}

// Done logs the last line, and says so when the run was interrupted.
func (l *Logger) Done(s Summary) {
	l.flushLine()
	if s.Interrupted {
		l.log().Warn("spool: interrupted; the rest stays queued", "messages", l.NotStarted)
	}
}
