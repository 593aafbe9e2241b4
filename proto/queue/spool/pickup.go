package spool

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// FlushPickup is what PickUpForFlush did.
type FlushPickup struct {
	Queue   SystemQueue
	Adopted int // files moved from the old spool (AdoptLegacy)
	PickupResult
}

// PickupError is a pickup that failed: the queue cannot take a drop (a
// full disk, an unwritable or unsafe queue); the drops stay where they
// were, and the flush still delivers what is queued.
type PickupError struct {
	What string // what stays: "the drops in DIR", "mail in the old spool DIR"
	Err  error
}

func (e *PickupError) Error() string {
	return fmt.Sprintf("pickup failed, %s stay where they were: %v", e.What, e.Err)
}

func (e *PickupError) Unwrap() error { return e.Err }

// PickUpForFlush is the pickup before a flush of the spool Locate picks
// (sendmail -q, qbox queue flush): when this process is root and
// delivers the system queue (no $QBOX_SPOOL) it adopts the mail an older
// qbox left in the old spool (AdoptLegacy), then, if the system queue
// exists, moves the drop files into the queue (PickUp); otherwise it does
// nothing. What it refused is in the result, for a person to see. A
// failure is a *PickupError; another pickup already running is none
// (that one moves the drops).
func PickUpForFlush(getenv func(string) string, now time.Time) (FlushPickup, error) {
	res := FlushPickup{Queue: System(getenv)}
	if os.Geteuid() != 0 || getenv("QBOX_SPOOL") != "" {
		return res, nil
	}
	var failed error
	if n, err := AdoptLegacy(res.Queue); err != nil {
		failed = &PickupError{What: "mail in the old spool " + res.Queue.Root, Err: err}
	} else {
		res.Adopted = n
	}
	if !res.Queue.Exists() {
		return res, failed
	}
	var err error
	res.PickupResult, err = PickUp(res.Queue, now)
	if err != nil && !errors.Is(err, ErrLocked) {
		failed = &PickupError{What: "the drops in " + res.Queue.DropDir(), Err: err}
	}
	if err == nil {
		res.Queue.RecordPickup(now)
	}
	return res, failed
}
