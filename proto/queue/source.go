package queue

import (
	"io"
	"time"

	"qbox/proto"
)

// Source is the storage a run delivers from: the engine defines it, a
// store implements it (Maildir here for serialmail's maildirs; the
// sendmail spool in proto/queue/spool). The engine never touches a file
// itself: it asks the source what waits, and tells it each recipient's
// fate; the source keeps whatever records it keeps.
//
// A source is used by one run at a time (Run takes its Lock), from the
// goroutine that called Run.
type Source interface {
	// Lock takes the store's exclusive lock for one run; another run
	// holding it gives an error wrapping ErrLocked.
	Lock() (unlock func(), err error)
	// Scan lists what waits now: the messages, in the order to send
	// them, each with the recipients still to deliver, and the stored
	// items that cannot be sent (Broken). It is called once per round;
	// a recipient the run already settled may be listed again (the
	// engine skips it by its Entry name).
	Scan(now time.Time) (*Scan, error)
	// Done forgets recipient i of m: the server said K, or its bounce
	// was accepted. The removal need not be durable before Sync. An
	// error means the recipient stays stored (it would be sent again);
	// one satisfying errors.Is(err, os.ErrNotExist) means it was gone.
	Done(m *Stored, i int) error
	// Defer records that recipient i of m stays for a later run, and
	// why (a Z, or a failure that could not be bounced).
	Defer(m *Stored, i int, reason string)
	// Remove removes an item that cannot be sent, once it was reported
	// to the postmaster.
	Remove(b *Broken) error
	// Sync makes the removals so far durable. Until it returns, a crash
	// may bring a delivered recipient back (sent twice, never lost).
	Sync() error
	// Left counts what stays stored after the run (recipients still to
	// deliver, and broken items), for Summary.Remaining.
	Left() (int, error)
}

// Backoff is a Source that spaces out its retries: the engine tells it
// which deferrals were a server's Z (after Defer), as opposed to no
// server reached, so that only a hub that answers "later" lengthens the
// wait, and an unreachable one is simply tried on the next run.
type Backoff interface {
	ServerDeferred(m *Stored, i int)
}

// BounceRecorder is a Source that keeps, per recipient, that its failure
// was reported (bounced, or the notice deliberately dropped) rather than
// delivered: the engine says so (with the bounce's note) just before Done.
type BounceRecorder interface {
	Bounced(m *Stored, i int, note string)
}

// Scan is what a Source holds now.
type Scan struct {
	Messages []*Stored
	// Broken are stored items that will never be sent as they are; a
	// source reports them only in a run over the whole store (not one
	// limited to a selection).
	Broken []*Broken
}

// Stored is one stored message with the recipients still to deliver.
type Stored struct {
	// Message is what a transport sends: Recipients are those still to
	// deliver. Its Open may return a *Broken (the stored item changed
	// since the scan): then nothing was sent.
	Message proto.Message
	// Entries name each recipient's record in the store, in Recipients'
	// order.
	Entries []Entry
	// Reopen, when set, opens the message again for recipient i's
	// bounce, after others may have been forgotten (a maildir opens that
	// recipient's own file: the first may be gone). Nil: Message.Open.
	Reopen func(i int) (io.ReadCloser, error)
	// Sys is the source's own handle on the message.
	Sys any
}

// Entry is one recipient's record in a store.
type Entry struct {
	// Name is unique in the store and stable during a run (a maildir:
	// the file's name, "new/KEY"); outcomes and reports show it.
	Name string
	// Queued is when it was queued: the lifetime runs from here.
	Queued time.Time
}

// Broken is a stored item that cannot be sent: its envelope cannot be
// read, it is no regular file, or it changed since the scan. It is
// reported on every run; past the lifetime it is reported to the
// postmaster and removed.
type Broken struct {
	Name   string // as Entry.Name
	Store  string // where it is (the queue directory), for the report
	Reason string
	Size   int64
	// Queued is when it was stored (zero: unknown, never expires).
	Queued time.Time
	// Open returns its bytes, to attach to the postmaster's report; an
	// error when nothing may be read (a symlink or FIFO is never opened).
	Open func() (io.ReadCloser, error)
	// Sys is the source's own handle on it.
	Sys any
}

func (b *Broken) Error() string { return b.Name + ": " + b.Reason }
