package proto

import (
	"context"
	"errors"
)

// A flush is stopped in two steps: first it is asked to start no new
// message but to finish what is under way (the QMTP packages already on
// the wire, whose replies are owed; the QMQP message being sent), so every
// message the server accepted is also removed here; then, if that takes
// too long for the operator, its context is cancelled. The first step
// travels in the context, so it reaches a flush through the same calls as
// the cancellation.

type stopStartingKey struct{}

// WithStopStarting returns a context carrying stop: once stop is closed,
// the senders below (the QMTP client, the spool flush) start no new
// message and finish the ones under way.
func WithStopStarting(ctx context.Context, stop <-chan struct{}) context.Context {
	return context.WithValue(ctx, stopStartingKey{}, stop)
}

// StopStarting returns the channel WithStopStarting put in ctx, or nil
// (never ready) when there is none.
func StopStarting(ctx context.Context) <-chan struct{} {
	stop, _ := ctx.Value(stopStartingKey{}).(<-chan struct{})
	return stop
}

// StoppedStarting reports whether ctx's stop channel is closed.
func StoppedStarting(ctx context.Context) bool {
	select {
	case <-StopStarting(ctx):
		return true
	default:
		return false
	}
}

// ErrInterrupted is wrapped by the error of a flush that stopped starting
// messages because it was asked to (a signal): what is left stays queued.
var ErrInterrupted = errors.New("interrupted: no further message started")
