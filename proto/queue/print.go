package queue

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"qbox/proto"
)

// Printer renders a run's outcomes, the one way every flush command
// does: one line per recipient and a summary, or the whole run as JSON at
// the end, with a progress bar on a terminal. Set it up, pass Events() to
// Run, then call Report with Run's summary.
type Printer struct {
	Out  io.Writer // one line per outcome and a summary, or JSON
	JSON bool
	// Quiet prints only what failed (every outcome but succeeded) and
	// the summary when something did: a cron job's output is mailed, so
	// it says something only when someone must act.
	Quiet bool
	// Always prints the summary even when the run found nothing to do
	// (an operator's command; a cron job's run says nothing then).
	Always   bool
	Progress io.Writer // a terminal for the progress bar, or nil

	outcomes []Outcome
	prog     *progress
}

// Events are the run's events the printer renders.
func (r *Printer) Events() Events {
	return Events{Outcome: r.outcome, Session: r.progressStart, Answered: r.progressStep}
}

func (r *Printer) outcome(o Outcome) {
	r.outcomes = append(r.outcomes, o)
	if r.JSON || r.Out == nil || (r.Quiet && o.Status == Succeeded) {
		return
	}
	r.progressClear()
	line := o.Status + " " + proto.Printable(o.File, 300)
	if o.Recipient != "" {
		line += " <" + proto.Printable(o.Recipient, 300) + ">"
	}
	if o.Server != "" && o.Protocol != "" {
		line += " over " + o.Protocol
	}
	if o.Reply != "" {
		said := ""
		if o.Server != "" {
			said = proto.Printable(o.Server, 200) + " said: "
		}
		// The status is the line's first word: the reply is shown as
		// the server wrote it ("250 2.0.0 ok", not "K250 2.0.0 ok").
		line += ": " + said + proto.Printable(o.Reply[1:], 2000)
	}
	if o.Note != "" {
		line += " (" + proto.Printable(o.Note, 2000) + ")"
	}
	fmt.Fprintln(r.Out, line)
}

// Report prints the summary (or, with JSON, the whole run).
func (r *Printer) Report(s Summary) {
	r.progressDone()
	if r.Out == nil {
		return
	}
	if r.JSON {
		outcomes := r.outcomes
		if outcomes == nil {
			outcomes = []Outcome{}
		}
		enc := json.NewEncoder(r.Out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(struct {
			Messages []Outcome `json:"messages"`
			Summary  Summary   `json:"summary"`
		}{outcomes, s})
		return
	}
	// A run that found nothing to do says nothing (cron mails any
	// output); a quiet one says nothing unless something failed.
	failed := s.Unreachable != "" || s.Interrupted
	for _, o := range r.outcomes {
		failed = failed || o.Status != Succeeded
	}
	if !failed && !r.Always && (len(r.outcomes) == 0 || r.Quiet) {
		return
	}
	var parts []string
	parts = append(parts, fmt.Sprintf("%d succeeded", s.Succeeded), fmt.Sprintf("%d deferred", s.Deferred),
		fmt.Sprintf("%d failed", s.Failed), fmt.Sprintf("%d bounced", s.Bounced))
	if s.Discarded > 0 {
		parts = append(parts, fmt.Sprintf("%d discarded", s.Discarded))
	}
	if s.Malformed > 0 {
		parts = append(parts, fmt.Sprintf("%d malformed", s.Malformed))
	}
	line := "summary: " + strings.Join(parts, ", ")
	line += fmt.Sprintf("; %d bytes sent in %.1fs", s.BytesSent, s.Seconds)
	if s.Unreachable != "" {
		line += "; server unreachable"
	}
	if s.Interrupted {
		line += "; interrupted"
	}
	line += fmt.Sprintf("; %d left", s.Remaining)
	fmt.Fprintln(r.Out, line)
}

// progress draws a one-line bar on a terminal: messages, bytes, rate and
// the time left. It is only used when stderr is a terminal.
type progress struct {
	total, done     int
	bytes, sent     int64
	start, lastDraw time.Time
	drawn           bool
}

func (r *Printer) progressStart(messages int, bytes int64) {
	if r.Progress == nil {
		return
	}
	r.prog = &progress{total: messages, bytes: bytes, start: time.Now()}
	r.progressDraw(true)
}

func (r *Printer) progressStep(bytes int64) {
	if r.prog == nil {
		return
	}
	r.prog.done++
	r.prog.sent += bytes
	r.progressDraw(r.prog.done == r.prog.total)
}

func (r *Printer) progressDraw(force bool) {
	p := r.prog
	now := time.Now()
	if !force && now.Sub(p.lastDraw) < 100*time.Millisecond {
		return
	}
	p.lastDraw = now
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.sent) / elapsed
	}
	eta := "--:--"
	if rate > 0 && p.bytes > p.sent {
		left := time.Duration(float64(p.bytes-p.sent) / rate * float64(time.Second))
		eta = fmt.Sprintf("%d:%02d", int(left.Minutes()), int(left.Seconds())%60)
	}
	const width = 24
	filled := 0
	if p.bytes > 0 {
		filled = int(int64(width) * p.sent / p.bytes)
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	fmt.Fprintf(r.Progress, "\r[%s] %d/%d msgs %s/%s %s/s ETA %s \x1b[K", bar, p.done, p.total,
		size(p.sent), size(p.bytes), size(int64(rate)), eta)
	p.drawn = true
}

// progressClear removes the bar before a message line is printed.
func (r *Printer) progressClear() {
	if r.prog != nil && r.prog.drawn {
		fmt.Fprint(r.Progress, "\r\x1b[K")
		r.prog.drawn = false
	}
}

func (r *Printer) progressDone() {
	r.progressClear()
	r.prog = nil
}

func size(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%dK", n>>10)
	default:
		return fmt.Sprintf("%dB", n)
	}
}
