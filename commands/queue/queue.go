// Package queue is `qbox queue`: the operator's view of the sendmail
// queue (the system queue's spool for root, else the user's own), one
// message at a time: list, show, delete, hold, release, a Nagios/Icinga
// check, and the system queue's pickup.
package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/proto"
	"qbox/proto/queue/spool"
)

// Command returns the queue command.
func Command() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "dir", Usage: "the spool `DIR` (default: $QBOX_SPOOL, for root the system queue's, else ~/.qbox/spool)"}
	return &cli.Command{
		Name:      "queue",
		Usage:     "list, show, delete, hold and release queued sendmail mail; check and measure the queue for Nagios and Prometheus",
		ArgsUsage: "list|show|delete|hold|release|flush|check|metrics|pickup [args]",
		Description: `The sendmail queue as messages: one per message however many recipients it
has, each with a stable ID (12 hex digits; any unique prefix of 4 or more
selects it). For root the queue is the system queue's
(/var/spool/qbox/queue, $QBOX_SYSTEM_QUEUE), for anyone else ~/.qbox/spool;
$QBOX_SPOOL or --dir names another.

   list [--json]              one line per message: ID, age, size, state
                              (queued, deferred, held), sender, recipients,
                              last error
   show ID                    the envelope, state and files, then the message
   delete ID...               remove the messages (no bounce)
   hold ID...                 keep them out of every flush until released
   release ID...              give them back to the flush
   flush [ID...]              deliver the queue (or these messages) now, as
                              sendmail -q does: one line per recipient and a
                              summary, as flush-maildir prints them
   check [--warn-age D --crit-age D --warn-count N --crit-count N
          --warn-drop-age D --crit-drop-age D --warn-drop-count N
          --crit-drop-count N --crit-stale D]
                              one Nagios/Icinga status line with perfdata:
                              the queue (held messages count in no
                              threshold; a malformed file is a WARNING,
                              a stuck message CRITICAL),
                              the maildrop's drops waiting for a pickup,
                              the last pickup and delivery; defaults
                              --warn-age 1h --crit-age 1d --warn-drop-age
                              1h --crit-drop-age 4h, counts and
                              --crit-stale off (0 turns a limit off)
   metrics [-o FILE]          the same state in Prometheus' text format;
                              -o writes FILE atomically (node_exporter's
                              textfile collector)
   pickup                     (root) move the system queue's drop files into
                              the queue now; sendmail -q does it before each
                              flush

delete, hold and release take the queue's lock, so they wait for no flush
and a flush never sends a message while it moves; with a flush running they
fail (exit 111) and change nothing. mailq and sendmail -bp list the same
messages in sendmail's layout.

Exit status: 0 done, 100 bad usage or an unknown ID, 111 the queue could not
be read or changed; check exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a
bad command line too).`,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return exitcode.Usage("a subcommand is needed: list, show, delete, hold, release, flush, check, metrics or pickup; see 'qbox queue --help'")
			}
			return exitcode.Usage("unknown subcommand %q (list, show, delete, hold, release, flush, check, metrics, pickup); see 'qbox queue --help'", c.Args().First())
		},
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "one line per queued message",
				Flags: []cli.Flag{dirFlag, &cli.BoolFlag{Name: "json", Usage: "write the list as JSON"}},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						// Flags after it would be read as arguments too.
						return exitcode.Usage("unexpected argument %q: list takes none (flags go first)", c.Args().First())
					}
					sp, err := open(c)
					if err != nil {
						return err
					}
					return List(c.App.Writer, sp, c.Bool("json"), time.Now())
				},
			},
			{
				Name:      "show",
				Usage:     "a message's envelope, state and content",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{dirFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return exitcode.Usage("one message ID is needed (qbox queue list shows them)")
					}
					sp, err := open(c)
					if err != nil {
						return err
					}
					return Show(c.App.Writer, sp, c.Args().First(), time.Now())
				},
			},
			changeCommand("delete", "remove queued messages (no bounce)", dirFlag, (*spool.Spool).Delete, "deleted"),
			changeCommand("hold", "keep messages out of every flush", dirFlag, (*spool.Spool).Hold, "held"),
			changeCommand("release", "give held messages back to the flush", dirFlag, (*spool.Spool).Release, "released"),
			checkCommand(dirFlag),
			metricsCommand(dirFlag),
			{
				Name:      "flush",
				Usage:     "deliver the queue now, or only the messages with these IDs, as sendmail -q (root: after picking up the drop files)",
				ArgsUsage: "[ID...]",
				Flags:     []cli.Flag{dirFlag},
				Action: func(c *cli.Context) error {
					for _, id := range c.Args().Slice() {
						if id == "" || strings.ContainsAny(id, "!\x00\r\n") {
							return exitcode.Usage("%q is not a queue ID (qbox queue list shows them)", id)
						}
					}
					dir, err := dirOf(c)
					if err != nil {
						return exitcode.Temp(err)
					}
					getenv := os.Getenv
					if d := c.String("dir"); d != "" {
						// The spool named is the one delivered: no
						// pickup into the system queue first.
						getenv = func(k string) string {
							if k == "QBOX_SPOOL" {
								return d
							}
							return os.Getenv(k)
						}
					}
					return Flush(c.Context, c.App.Writer, c.App.ErrWriter, getenv, dir, c.Args().Slice())
				},
			},
			{
				Name:  "pickup",
				Usage: "(root) move the system queue's drop files into its queue",
				Action: func(c *cli.Context) error {
					if os.Geteuid() != 0 {
						// The drop files are other users' (0600): only
						// root reads them. Running it again as the same
						// user fails the same way.
						return exitcode.Perm(errors.New("needs root: the drop files are other users' (as root, sendmail -q and the runner pick them up)"))
					}
					q := spool.System(os.Getenv)
					res, err := spool.PickUp(q, time.Now())
					for _, p := range res.Picked {
						fmt.Fprintf(c.App.Writer, "picked up %s from uid %d: <%s>, %d recipient(s)\n", p.Name, p.UID, proto.Printable(p.Sender, 200), p.Recipients)
					}
					for _, r := range res.Refused {
						fmt.Fprintf(c.App.ErrWriter, "qbox queue pickup: %s/%s: %s\n", q.DropDir(), r.Name, r.Reason)
					}
					if err == nil {
						q.RecordPickup(time.Now())
					}
					if errors.Is(err, spool.ErrNoSystemQueue) {
						return exitcode.Configuration(fmt.Errorf("no system queue at %s (create it: see the README's Install section)", q.Root))
					}
					return exitcode.Temp(err)
				},
			},
		},
	}
}

func dirOf(c *cli.Context) (string, error) {
	if d := c.String("dir"); d != "" {
		return d, nil
	}
	return spool.Locate(os.Getenv)
}

func open(c *cli.Context) (*spool.Spool, error) {
	dir, err := dirOf(c)
	if err != nil {
		return nil, exitcode.Temp(err)
	}
	return &spool.Spool{Dir: dir}, nil
}

// changeCommand is delete, hold or release: under the queue's lock, each
// ID must name a message; nothing is changed unless all do.
func changeCommand(name, usage string, dirFlag cli.Flag, change func(*spool.Spool, *spool.Message) error, done string) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "ID...",
		Flags:     []cli.Flag{dirFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return exitcode.Usage("one or more message IDs are needed (qbox queue list shows them)")
			}
			sp, err := open(c)
			if err != nil {
				return err
			}
			return Change(c.App.Writer, sp, c.Args().Slice(), change, done)
		},
	}
}

// Change applies change to every message the IDs name, under the lock.
func Change(w io.Writer, sp *spool.Spool, ids []string, change func(*spool.Spool, *spool.Message) error, done string) error {
	if err := spool.Check(sp.Dir); err != nil {
		return exitcode.Temp(err)
	}
	lock, err := sp.Lock()
	if err != nil {
		return exitcode.Temp(err)
	}
	defer lock.Unlock()
	l, err := sp.Messages()
	if err != nil {
		return exitcode.Temp(err)
	}
	var todo []*spool.Message
	seen := map[*spool.Message]bool{}
	for _, id := range ids {
		ms, err := l.Find(id)
		if err != nil {
			return exitcode.Perm(err)
		}
		for _, m := range ms {
			if !seen[m] {
				seen[m] = true
				todo = append(todo, m)
			}
		}
	}
	for _, m := range todo {
		if err := change(sp, m); err != nil {
			return exitcode.Temp(fmt.Errorf("%s: %w", m.ID, err))
		}
		fmt.Fprintf(w, "%s %s (<%s>, %d recipient(s))\n", done, m.ID, proto.Printable(m.Sender, 200), len(m.Recipients))
	}
	return nil
}

// state is a message's state word in list and show.
func state(m *spool.Message) string {
	switch {
	case m.Held:
		return "held"
	case m.Stuck:
		return "stuck" // failed for good, and no bounce could be sent
	case m.LastError != "":
		return "deferred"
	}
	return "queued"
}

// jsonMessage is one message of list --json.
type jsonMessage struct {
	ID          string    `json:"id"`
	Sender      string    `json:"sender"`
	Recipients  []string  `json:"recipients"`
	State       string    `json:"state"`
	Held        bool      `json:"held"`
	Queued      time.Time `json:"queued"`
	AgeSeconds  int64     `json:"age_seconds"`
	Size        int64     `json:"size"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	Files       []string  `json:"files"`
}

type jsonMalformed struct {
	File   string `json:"file"`
	Reason string `json:"reason"`
	Size   int64  `json:"size"`
}

type jsonList struct {
	Queue         string          `json:"queue"`
	Messages      []jsonMessage   `json:"messages"`
	Malformed     []jsonMalformed `json:"malformed"`
	WaitingPickup int             `json:"waiting_pickup"`
}

// List writes one line per message (or JSON).
func List(w io.Writer, sp *spool.Spool, asJSON bool, now time.Time) error {
	l, err := messages(sp)
	if err != nil {
		return exitcode.Temp(err)
	}
	waiting := 0
	if os.Geteuid() == 0 {
		waiting = spool.DropsWaiting(spool.System(os.Getenv))
	}
	if asJSON {
		out := jsonList{Queue: sp.Dir, Messages: []jsonMessage{}, Malformed: []jsonMalformed{}, WaitingPickup: waiting}
		for i := range l.Messages {
			m := &l.Messages[i]
			j := jsonMessage{ID: m.ID, Sender: m.Sender, Recipients: m.Recipients, State: state(m), Held: m.Held,
				Queued: m.Queued.UTC(), AgeSeconds: int64(now.Sub(m.Queued) / time.Second), Size: m.Size,
				LastError: m.LastError, LastAttempt: m.LastAttempt.UTC()}
			j.Files = m.Files()
			out.Messages = append(out.Messages, j)
		}
		for _, b := range l.Malformed {
			out.Malformed = append(out.Malformed, jsonMalformed{File: b.Path, Reason: b.Reason, Size: b.Size})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for i := range l.Messages {
		m := &l.Messages[i]
		line := fmt.Sprintf("%s %7s %9d %-8s <%s> -> %s", m.ID, spool.Age(now.Sub(m.Queued)), m.Size, state(m),
			proto.Printable(m.Sender, 200), proto.Printable(strings.Join(m.Recipients, ","), 1000))
		if m.LastError != "" {
			line += "  last error: " + proto.Printable(m.LastError, 500)
		}
		fmt.Fprintln(w, line)
	}
	for _, b := range l.Malformed {
		fmt.Fprintf(w, "%-12s %7s %9d %-8s %s: %s\n", "-", spool.Age(now.Sub(b.ModTime)), b.Size, "broken", proto.Printable(b.Path, 300), proto.Printable(b.Reason, 300))
	}
	if waiting > 0 {
		fmt.Fprintf(w, "-- %d message(s) wait in %s for pickup (sendmail -q, qbox queue pickup)\n", waiting, spool.System(os.Getenv).DropDir())
	}
	return nil
}

// messages lists a spool that may not exist yet (an empty one).
func messages(sp *spool.Spool) (*spool.Listing, error) {
	if _, err := os.Lstat(sp.Dir); errors.Is(err, os.ErrNotExist) {
		return &spool.Listing{}, nil
	}
	return sp.Messages()
}

// Show writes a message's envelope and state, then its content.
func Show(w io.Writer, sp *spool.Spool, id string, now time.Time) error {
	l, err := messages(sp)
	if err != nil {
		return exitcode.Temp(err)
	}
	ms, err := l.Find(id)
	if err != nil {
		return exitcode.Perm(err)
	}
	if len(ms) > 1 {
		var ids []string
		for _, m := range ms {
			ids = append(ids, m.ID)
		}
		return exitcode.Usage("%q names %d messages (%s); give more of the ID", id, len(ms), strings.Join(ids, ", "))
	}
	m := ms[0]
	fmt.Fprintf(w, "ID: %s\nState: %s\nQueued: %s (%s ago)\nSize: %d\nSender: <%s>\n", m.ID, state(m),
		m.Queued.Local().Format(time.RFC1123Z), spool.Age(now.Sub(m.Queued)), m.Size, proto.Printable(m.Sender, 1000))
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "Recipient: <%s>\n", proto.Printable(r, 1000))
	}
	if m.LastError != "" {
		fmt.Fprintf(w, "Last error: %s", proto.Printable(m.LastError, 2000))
		if !m.LastAttempt.IsZero() {
			fmt.Fprintf(w, " (%s ago)", spool.Age(now.Sub(m.LastAttempt)))
		}
		fmt.Fprintln(w)
	}
	for _, p := range m.Files() {
		fmt.Fprintf(w, "File: %s\n", p)
	}
	fmt.Fprintln(w)
	r, f, err := m.Open()
	if err != nil {
		return exitcode.Temp(err)
	}
	defer f.Close()
	_, err = io.Copy(w, r)
	return exitcode.Temp(err)
}

// ParseAge reads a duration as Go does, with d for days as well ("2d",
// "1d12h", "90m").
func ParseAge(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration (30m, 4h, 2d)", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (30m, 4h, 2d)", s)
	}
	return days + d, nil
}
