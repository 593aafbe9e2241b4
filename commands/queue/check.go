package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto"
	"qbox/proto/queue/spool"
)

// The check's verdicts, whose String is their word on the status line
// (Nagios plugin guidelines); exitcode.Nagios numbers them 0, 1, 2 and
// 3. UNKNOWN is a check that could not run.
type Verdict = exitcode.Verdict

const (
	OK       = exitcode.VerdictOK
	Warning  = exitcode.VerdictWarning
	Critical = exitcode.VerdictCritical
	Unknown  = exitcode.VerdictUnknown
)

// Limits are the check's thresholds; a zero is no limit.
type Limits struct {
	WarnAge, CritAge             time.Duration // the oldest message not held
	WarnCount, CritCount         int           // messages not held
	WarnDropAge, CritDropAge     time.Duration // the oldest drop waiting for a pickup
	WarnDropCount, CritDropCount int           // drops waiting for a pickup
	// CritStale: CRITICAL when drops wait and no pickup has completed
	// for that long (or ever).
	CritStale time.Duration
}

// DefaultLimits are the check's thresholds when none is given: a hub
// down for an hour is worth a look, for a day it needs one; a drop that
// waited an hour for a pickup (twice a -q30m runner's interval) means no
// runner, four hours that nobody noticed.
var DefaultLimits = Limits{WarnAge: time.Hour, CritAge: 24 * time.Hour, WarnDropAge: time.Hour, CritDropAge: 4 * time.Hour}

// State is the queue as monitoring sees it.
type State struct {
	Dir                               string
	Queued, Deferred, Held, Malformed int
	Stuck                             int       // failed for good, and no bounce could be sent
	Oldest                            time.Time // submission of the oldest message not held; zero: none
	Maildrop                          bool      // the system queue's maildrop was counted
	DropDir                           string
	Drops                             spool.DropStats
	LastPickup, LastDelivery          time.Time // zero: never recorded
	// LastError is the most recent error among the waiting messages (a
	// refused password, a hub down), so the alert says why mail waits.
	LastError   string
	lastAttempt time.Time
}

// Waiting is the messages a flush would try (neither held nor malformed).
func (s *State) Waiting() int { return s.Queued + s.Deferred }

// Gather reads the state of the spool sp: its messages by state, and for
// the system queue's spool its maildrop too. A spool that does not exist
// yet is an empty one.
func Gather(sp *spool.Spool, getenv func(string) string) (State, error) {
	st := State{Dir: sp.Dir}
	l, err := messages(sp)
	if err != nil {
		return st, err
	}
	for i := range l.Messages {
		m := &l.Messages[i]
		switch state(m) {
		case "held":
			st.Held++
			continue
		case "stuck":
			st.Stuck++
			continue
		case "deferred":
			st.Deferred++
		default:
			st.Queued++
		}
		if st.Oldest.IsZero() || m.Queued.Before(st.Oldest) {
			st.Oldest = m.Queued
		}
		if m.LastError != "" && (st.LastError == "" || m.LastAttempt.After(st.lastAttempt)) {
			st.LastError, st.lastAttempt = m.LastError, m.LastAttempt
		}
	}
	st.Malformed = len(l.Malformed)
	q := spool.System(getenv)
	if samePath(sp.Dir, q.QueueDir()) && q.Exists() {
		st.Maildrop, st.DropDir = true, q.DropDir()
		if st.Drops, err = q.Drops(); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return st, fmt.Errorf("cannot list the maildrop %s (only root can): %w", q.DropDir(), err)
			}
			return st, err
		}
	}
	if _, err := os.Lstat(sp.Dir); err == nil {
		if st.LastPickup, err = sp.LastStamp(spool.StampPickup); err != nil {
			return st, err
		}
		if st.LastDelivery, err = sp.LastStamp(spool.StampDelivery); err != nil {
			return st, err
		}
	}
	return st, nil
}

func samePath(a, b string) bool {
	a, errA := filepath.Abs(a)
	b, errB := filepath.Abs(b)
	return errA == nil && errB == nil && a == b
}

// Check writes one Nagios status line with perfdata for st and returns
// the verdict. Held messages count in no threshold: an operator held
// them on purpose. Files that are not messages (nobody can deliver them)
// make it a WARNING at least.
func Check(w io.Writer, st State, lim Limits, now time.Time) Verdict {
	var oldest, dropOldest time.Duration
	if !st.Oldest.IsZero() {
		oldest = max(now.Sub(st.Oldest), 0)
	}
	if !st.Drops.Oldest.IsZero() {
		dropOldest = max(now.Sub(st.Drops.Oldest), 0)
	}
	count := st.Waiting()
	verdict := OK
	var why []string
	raise := func(c Verdict, reason string) { // Critical is worse than Warning
		if c > verdict {
			verdict = c
		}
		why = append(why, reason)
	}
	age := func(d, warn, crit time.Duration, what string) {
		switch {
		case crit > 0 && d > crit:
			raise(Critical, what+" older than "+short(crit))
		case warn > 0 && d > warn:
			raise(Warning, what+" older than "+short(warn))
		}
	}
	number := func(n, warn, crit int, what string) {
		switch {
		case crit > 0 && n > crit:
			raise(Critical, fmt.Sprintf("more than %d %s", crit, what))
		case warn > 0 && n > warn:
			raise(Warning, fmt.Sprintf("more than %d %s", warn, what))
		}
	}
	age(oldest, lim.WarnAge, lim.CritAge, "oldest")
	number(count, lim.WarnCount, lim.CritCount, "messages")
	if st.Malformed > 0 {
		raise(Warning, fmt.Sprintf("%d undeliverable file(s)", st.Malformed))
	}
	if st.Stuck > 0 {
		raise(Critical, fmt.Sprintf("%d message(s) stuck: failed, and no bounce could be sent (qbox queue list)", st.Stuck))
	}
	if st.Maildrop {
		age(dropOldest, lim.WarnDropAge, lim.CritDropAge, "a drop waiting for pickup")
		number(st.Drops.Count, lim.WarnDropCount, lim.CritDropCount, "drops waiting for pickup")
		if lim.CritStale > 0 && st.Drops.Count > 0 && (st.LastPickup.IsZero() || now.Sub(st.LastPickup) > lim.CritStale) {
			raise(Critical, "no pickup for "+short(lim.CritStale)+" while drops wait: is the queue runner (sendmail -bd -q30m) running?")
		}
	}
	text := fmt.Sprintf("%d message(s) queued, oldest %s, %d held", count, spool.Age(oldest), st.Held)
	if st.Stuck > 0 {
		text += fmt.Sprintf(", %d stuck", st.Stuck)
	}
	if st.Maildrop {
		text += fmt.Sprintf(", %d in the maildrop", st.Drops.Count)
		if st.Drops.Count > 0 {
			text += ", oldest " + spool.Age(dropOldest)
		}
		text += ", last pickup " + ago(st.LastPickup, now)
	}
	if !st.LastDelivery.IsZero() {
		text += ", last delivery " + ago(st.LastDelivery, now)
	}
	if len(why) > 0 {
		text += ": " + strings.Join(why, ", ")
	}
	if count > 0 && st.LastError != "" {
		text += "; last error: " + proto.Printable(strings.Join(strings.Fields(st.LastError), " "), 300)
	}
	perf := fmt.Sprintf("messages=%d;%s;%s;0 oldest=%ds;%s;%s;0 held=%d;;;0 malformed=%d;;;0",
		count, limit(lim.WarnCount), limit(lim.CritCount),
		seconds(oldest), limitAge(lim.WarnAge), limitAge(lim.CritAge), st.Held, st.Malformed)
	if st.Stuck > 0 {
		perf += fmt.Sprintf(" stuck=%d;;0;0", st.Stuck)
	}
	if st.Maildrop {
		perf += fmt.Sprintf(" maildrop=%d;%s;%s;0 maildrop_oldest=%ds;%s;%s;0",
			st.Drops.Count, limit(lim.WarnDropCount), limit(lim.CritDropCount),
			seconds(dropOldest), limitAge(lim.WarnDropAge), limitAge(lim.CritDropAge))
		if !st.LastPickup.IsZero() {
			perf += fmt.Sprintf(" last_pickup=%ds;;%s;0", seconds(now.Sub(st.LastPickup)), limitAge(lim.CritStale))
		}
	}
	if !st.LastDelivery.IsZero() {
		perf += fmt.Sprintf(" last_delivery=%ds;;;0", seconds(now.Sub(st.LastDelivery)))
	}
	fmt.Fprintf(w, "QUEUE %s - %s | %s\n", verdict, proto.Printable(text, 2000), perf)
	return verdict
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return spool.Age(now.Sub(t)) + " ago"
}

// short writes a threshold as ParseAge reads it: 1d, 4h, 30m, 90s.
func short(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		unit string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}} {
		if d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.unit
		}
	}
	return d.String()
}

func seconds(d time.Duration) int64 { return int64(max(d, 0) / time.Second) }

func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func limitAge(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return strconv.FormatInt(seconds(d), 10)
}

// checkCommand is `qbox queue check`, a Nagios/Icinga plugin: its exit
// status is the plugin's (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), a
// usage error included (3, one line on stderr), as the plugin
// guidelines want.
func checkCommand(dirFlag cli.Flag) *cli.Command {
	d := DefaultLimits
	ageFlag := func(name string, def time.Duration, usage string) cli.Flag {
		v := ""
		if def > 0 {
			v = short(def)
		}
		return &cli.StringFlag{Name: name, Value: v, Usage: usage}
	}
	return &cli.Command{
		Name:  "check",
		Usage: "a Nagios/Icinga check of the queue, the maildrop and the runner",
		Flags: []cli.Flag{dirFlag,
			ageFlag("warn-age", d.WarnAge, "WARNING when the oldest message is older than `D` (30m, 4h, 2d; 0: no limit)"),
			ageFlag("crit-age", d.CritAge, "CRITICAL when the oldest message is older than `D`"),
			&cli.IntFlag{Name: "warn-count", Usage: "WARNING when more than `N` messages wait (0: no limit)"},
			&cli.IntFlag{Name: "crit-count", Usage: "CRITICAL when more than `N` messages wait (0: no limit)"},
			ageFlag("warn-drop-age", d.WarnDropAge, "WARNING when a drop has waited longer than `D` in the maildrop for a pickup"),
			ageFlag("crit-drop-age", d.CritDropAge, "CRITICAL when a drop has waited longer than `D` in the maildrop"),
			&cli.IntFlag{Name: "warn-drop-count", Usage: "WARNING when more than `N` drops wait in the maildrop (0: no limit)"},
			&cli.IntFlag{Name: "crit-drop-count", Usage: "CRITICAL when more than `N` drops wait in the maildrop (0: no limit)"},
			&cli.StringFlag{Name: "crit-stale", Usage: "CRITICAL when drops wait and no pickup has completed for `D` (default off)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return nagiosUsage("unexpected argument %q (the check takes flags only: --warn-age, --crit-age, ...)", c.Args().First())
			}
			lim, err := limitsFrom(c)
			if err != nil {
				return err
			}
			var st State
			dir, err := dirOf(c)
			if err == nil {
				st, err = Gather(&spool.Spool{Dir: dir}, os.Getenv)
			}
			verdict := Unknown
			if err == nil {
				verdict = Check(c.App.Writer, st, lim, time.Now())
			} else {
				fmt.Fprintf(c.App.Writer, "QUEUE UNKNOWN - %s\n", proto.Printable(err.Error(), 500))
			}
			// The status line said it all; exitcode.Nagios numbers it.
			return exitcode.Found(exitcode.Nagios, verdict)
		},
	}
}

// nagiosUsage is a usage error of the check: UNKNOWN (3) under the
// plugin's scheme, one line on stderr. (A flag urfave/cli cannot parse
// gets the same through commands' usageSchemes.)
func nagiosUsage(format string, a ...any) error {
	return exitcode.Under(exitcode.Nagios, exitcode.Usage(format, a...))
}

func limitsFrom(c *cli.Context) (Limits, error) {
	var lim Limits
	for _, a := range []struct {
		flag string
		to   *time.Duration
	}{{"warn-age", &lim.WarnAge}, {"crit-age", &lim.CritAge}, {"warn-drop-age", &lim.WarnDropAge},
		{"crit-drop-age", &lim.CritDropAge}, {"crit-stale", &lim.CritStale}} {
		v := c.String(a.flag)
		if v == "" || v == "0" {
			continue
		}
		d, err := ParseAge(v)
		if err != nil {
			return lim, nagiosUsage("--%s: %v", a.flag, err)
		}
		*a.to = d
	}
	for _, n := range []struct {
		flag string
		to   *int
	}{{"warn-count", &lim.WarnCount}, {"crit-count", &lim.CritCount}, {"warn-drop-count", &lim.WarnDropCount}, {"crit-drop-count", &lim.CritDropCount}} {
		if *n.to = c.Int(n.flag); *n.to < 0 {
			return lim, nagiosUsage("--%s: %d is negative (0 is no limit)", n.flag, *n.to)
		}
	}
	return lim, nil
}
