package server

import (
	"sync"
	"testing"
)

// Go never queues a job behind another: jobs that can only finish
// together (each waits for all to have started) all finish, however many
// goroutines wait for work; and no more than MaxIdleWorkers stay waiting.
func TestGoRunsJobsAtOnce(t *testing.T) {
	for round := range 3 {
		n := 2*MaxIdleWorkers + round
		var started, done sync.WaitGroup
		started.Add(n)
		done.Add(n)
		for range n {
			Go(func() {
				defer done.Done()
				started.Done()
				started.Wait()
			})
		}
		done.Wait()
		if idle := idleWorkers.Load(); idle > MaxIdleWorkers {
			t.Fatalf("%d goroutines wait for work, want at most %d", idle, MaxIdleWorkers)
		}
	}
}
