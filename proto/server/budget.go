package server

import "sync"

// Budget is a number of bytes shared by every session of a server: what
// sessions hold in memory (envelope addresses) is taken from it as it
// arrives and given back when the session is done with it, so memory is
// bounded by the budget, not by what clients send. A nil *Budget is
// unlimited.
type Budget struct {
	mu   sync.Mutex
	left int64
}

// NewBudget returns a budget of n bytes.
func NewBudget(n int64) *Budget { return &Budget{left: n} }

// Take takes n bytes if that many are left, and reports whether it did.
// It never waits: a session that cannot have more refuses what does not
// fit (a Z: the client comes again later) rather than block holding what
// it has.
func (b *Budget) Take(n int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

// Give returns n bytes taken before.
func (b *Budget) Give(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}

// AddressCost is what one envelope address of n bytes is charged: its
// bytes and what a server and a store keep per address besides (string
// and slice headers, a reply).
func AddressCost(n int) int64 { return int64(n) + 128 }
