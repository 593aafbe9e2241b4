package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func checkCounts(t *testing.T, c *ConnLimit, held, running, waiting int) {
	t.Helper()
	if h, r, w := c.Counts(); h != held || r != running || w != waiting {
		t.Fatalf("counts held %d running %d waiting %d, want %d %d %d", h, r, w, held, running, waiting)
	}
}

// The waiting room: connections beyond Max wait in the order they
// entered and get the slots in that order, each as the one before gives
// its slot back; one beyond Max + Waiting is refused at once.
func TestConnLimitWaitsInOrder(t *testing.T) {
	c := NewConnLimit(1, 3, time.Hour)
	first := c.Enter()
	if first == nil || !first.Wait(context.Background()) {
		t.Fatal("the first connection did not get the free slot")
	}
	var waiting []*Ticket
	for range 3 {
		tk := c.Enter()
		if tk == nil {
			t.Fatal("no place in a waiting room with room")
		}
		waiting = append(waiting, tk)
	}
	if c.Enter() != nil {
		t.Fatal("a fifth connection entered a limit of 1 + 3")
	}
	checkCounts(t, c, 4, 1, 3)
	got := make(chan int, 3)
	for i, tk := range waiting {
		go func() {
			if tk.Wait(context.Background()) {
				got <- i
			}
		}()
	}
	first.Release()
	first.Leave()
	for want := range 3 {
		i := <-got
		if i != want {
			t.Fatalf("slot %d went to waiting connection %d", want, i)
		}
		waiting[i].Release()
		waiting[i].Leave()
	}
	checkCounts(t, c, 0, 0, 0)
}

// A connection whose session is over (slot given back) holds its place
// against Max + Waiting until it leaves (the server leaves once it has
// closed it, or moved it to a linger place).
func TestConnLimitPlaceHeldUntilLeave(t *testing.T) {
	c := NewConnLimit(1, 1, time.Hour)
	a, b := c.Enter(), c.Enter()
	if a == nil || b == nil {
		t.Fatal("no room for two")
	}
	a.Release() // a's session is over; b takes the slot
	if !b.Wait(context.Background()) {
		t.Fatal("the waiting connection did not get the slot given back")
	}
	checkCounts(t, c, 2, 1, 0)
	if c.Enter() != nil {
		t.Fatal("a third connection entered while two are held")
	}
	a.Leave()
	a.Leave() // twice is harmless
	if d := c.Enter(); d == nil {
		t.Fatal("no place after the first connection left")
	} else {
		d.Leave()
	}
	b.Leave()
	checkCounts(t, c, 0, 0, 0)
}

// A wait ends after QueueWait or when its context is done, without a
// slot; the place is given back on Leave.
func TestConnLimitWaitEnds(t *testing.T) {
	c := NewConnLimit(1, 0, time.Millisecond) // 0: the default room, 5
	if c.Waiting() != DefaultWaitingFactor {
		t.Fatalf("waiting room %d, want %d", c.Waiting(), DefaultWaitingFactor)
	}
	slot := c.Enter()
	late := c.Enter()
	if late.Wait(context.Background()) {
		t.Fatal("got a slot that was never free")
	}
	late.Leave()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c2 := NewConnLimit(1, -1, time.Hour) // no waiting room
	if c2.Waiting() != 0 {
		t.Fatalf("waiting room %d, want none", c2.Waiting())
	}
	s2 := c2.Enter()
	if c2.Enter() != nil {
		t.Fatal("entered a full limit without a waiting room")
	}
	s2.Release()
	s2.Leave()
	c3 := NewConnLimit(1, 1, time.Hour)
	s3, w3 := c3.Enter(), c3.Enter()
	if w3.Wait(ctx) {
		t.Fatal("a cancelled wait got a slot")
	}
	w3.Leave()
	s3.Leave()
	checkCounts(t, c3, 0, 0, 0)
	slot.Leave()
	checkCounts(t, c, 0, 0, 0)
}

// Connections linger (refusals of clients outside the access list,
// sessions whose client may still send) in at most Max places of their
// own, apart from the waiting room.
func TestConnLimitLingerPlaces(t *testing.T) {
	c := NewConnLimit(2, -1, time.Hour)
	places := 0
	for range 3 {
		if c.StartLinger() {
			places++
		}
	}
	if places != 2 {
		t.Fatalf("%d linger places, want Max, 2", places)
	}
	if a, b := c.Enter(), c.Enter(); a == nil || b == nil {
		t.Fatal("lingering connections took session slots")
	}
	c.EndLinger()
	if !c.StartLinger() {
		t.Fatal("a linger place given back is not free")
	}
}

// Under concurrent use no more than Max sessions run and no more than
// Max + Waiting connections are held.
func TestConnLimitConcurrent(t *testing.T) {
	const max, waiting = 4, 8
	c := NewConnLimit(max, waiting, time.Hour)
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				tk := c.Enter()
				if tk == nil {
					continue
				}
				if h, _, _ := c.Counts(); h > max+waiting {
					t.Errorf("%d held", h)
				}
				if tk.Wait(context.Background()) {
					n := running.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					running.Add(-1)
					tk.Release()
				}
				tk.Leave()
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > max {
		t.Fatalf("%d sessions at once, Max %d", p, max)
	}
	checkCounts(t, c, 0, 0, 0)
}
