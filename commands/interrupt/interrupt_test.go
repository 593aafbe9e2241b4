package interrupt

import (
	"bytes"
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// The first signal stops starting new work and leaves the context alive;
// the second cancels it.
func TestTwoSteps(t *testing.T) {
	var stderr syncBuffer
	f := Catch(context.Background(), &stderr, "test")
	defer f.Release()
	guard := time.After(30 * time.Second) // a guard, not a measure

	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	select {
	case <-proto.StopStarting(f.Context):
	case <-guard:
		t.Fatal("the first signal did not stop starting new work")
	}
	if f.Context.Err() != nil {
		t.Fatal("the first signal cancelled the context")
	}
	if !f.Interrupted() {
		t.Error("Interrupted() is false after a signal")
	}

	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	select {
	case <-f.Context.Done():
	case <-guard:
		t.Fatal("the second signal did not cancel the context")
	}
}

// A queue runner that caught the signal before this flush installed its
// handler (during the pickup) passes it on in the context: the flush
// starts nothing, as if it had caught the signal itself.
func TestOuterStopReachesTheFlush(t *testing.T) {
	outer := make(chan struct{})
	close(outer)
	var stderr syncBuffer
	f := Catch(proto.WithStopStarting(context.Background(), outer), &stderr, "test")
	defer f.Release()
	select {
	case <-proto.StopStarting(f.Context):
	case <-time.After(30 * time.Second): // a guard against hanging, not a timing assertion
		t.Fatal("the runner's stop did not reach the flush")
	}
	if !f.Interrupted() {
		t.Error("the flush does not say it was interrupted")
	}
	if f.Context.Err() != nil {
		t.Error("the first step cancelled the context")
	}
}
