package queue

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/promtext"
	"qbox/proto/queue/spool"
)

// Registry holds the queue's state st as Prometheus gauges, read at now.
// A time never recorded (no pickup, no delivery yet) is 0, as node
// exporter's textfile collector and alert rules expect of a timestamp
// metric; the maildrop's gauges are there only for the system queue.
func Registry(st State, now time.Time) *promtext.Registry {
	reg := &promtext.Registry{}
	gauge := func(name, help string, v float64) {
		g := promtext.NewGauge(name, help)
		g.Set(v)
		reg.Register(g)
	}
	msgs := promtext.NewGauge("qbox_queue_messages",
		"Messages in the queue by state: queued (never tried), deferred (tried, will be retried), held (kept out of every flush), malformed (files nobody can deliver), stuck (failed for good, and no bounce could be sent).",
		"state")
	msgs.Set(float64(st.Queued), "queued")
	msgs.Set(float64(st.Deferred), "deferred")
	msgs.Set(float64(st.Held), "held")
	msgs.Set(float64(st.Malformed), "malformed")
	msgs.Set(float64(st.Stuck), "stuck")
	reg.Register(msgs)
	age := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return max(now.Sub(t), 0).Seconds()
	}
	stamp := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	gauge("qbox_queue_oldest_age_seconds", "Age of the oldest message not held, from its submission; 0 when none waits.", age(st.Oldest))
	gauge("qbox_queue_last_pickup_timestamp_seconds", "When the runner last completed a pickup of the maildrop (Unix time); 0 if never.", stamp(st.LastPickup))
	gauge("qbox_queue_last_delivery_timestamp_seconds", "When a flush last had a message accepted (Unix time); 0 if never.", stamp(st.LastDelivery))
	if st.Maildrop {
		gauge("qbox_queue_maildrop_messages", "Drops waiting in the system queue's maildrop for a pickup.", float64(st.Drops.Count))
		gauge("qbox_queue_maildrop_oldest_age_seconds", "Age of the oldest drop waiting for a pickup; 0 when none waits.", age(st.Drops.Oldest))
	}
	return reg
}

// WriteMetrics writes reg in Prometheus' text format.
func WriteMetrics(w io.Writer, reg *promtext.Registry) error {
	_, err := reg.WriteTo(w)
	return err
}

// metricsCommand is `qbox queue metrics`.
func metricsCommand(dirFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "metrics",
		Usage: "the queue's state in Prometheus' text format (-o FILE for node_exporter's textfile collector)",
		Flags: []cli.Flag{dirFlag,
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` atomically (a temporary file renamed over it) instead of standard output"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return exitcode.Usage("qbox queue metrics takes no arguments (-o FILE writes a file)")
			}
			dir, err := dirOf(c)
			if err != nil {
				return exitcode.Temp(err)
			}
			st, err := Gather(&spool.Spool{Dir: dir}, os.Getenv)
			if err != nil {
				return exitcode.Temp(err)
			}
			reg := Registry(st, time.Now())
			if out := c.String("output"); out != "" {
				if err := promtext.WriteFile(out, reg); err != nil {
					return exitcode.Temp(fmt.Errorf("writing %s: %w", out, err))
				}
				return nil
			}
			return exitcode.Temp(WriteMetrics(c.App.Writer, reg))
		},
	}
}
