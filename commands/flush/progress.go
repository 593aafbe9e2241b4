package flush

import (
	"fmt"
	"strings"
	"time"
)

// progress draws a one-line bar on a terminal: messages, bytes, rate and
// the time left. It is only used when stderr is a terminal.
type progress struct {
	total, done     int
	bytes, sent     int64
	start, lastDraw time.Time
	drawn           bool
}

func (r *renderer) progressStart(messages int, bytes int64) {
	if r.cfg.Progress == nil {
		return
	}
	r.prog = &progress{total: messages, bytes: bytes, start: time.Now()}
	r.progressDraw(true)
}

func (r *renderer) progressStep(bytes int64) {
	if r.prog == nil {
		return
	}
	r.prog.done++
	r.prog.sent += bytes
	r.progressDraw(r.prog.done == r.prog.total)
}

func (r *renderer) progressDraw(force bool) {
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
	fmt.Fprintf(r.cfg.Progress, "\r[%s] %d/%d msgs %s/%s %s/s ETA %s \x1b[K", bar, p.done, p.total,
		size(p.sent), size(p.bytes), size(int64(rate)), eta)
	p.drawn = true
}

// progressClear removes the bar before a message line is printed.
func (r *renderer) progressClear() {
	if r.prog != nil && r.prog.drawn {
		fmt.Fprint(r.cfg.Progress, "\r\x1b[K")
		r.prog.drawn = false
	}
}

func (r *renderer) progressDone() {
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
