package serve

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// gatedWriter blocks each write until told to go on.
type gatedWriter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	gate   chan struct{} // a receive lets one write through
	inside chan struct{} // a write has started
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.inside <- struct{}{}
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	return g.b.Write(p)
}

// Lines logged while a write is under way go out together in the next
// one, in order, and Flush waits for them all.
func TestLogWriterGroupsLines(t *testing.T) {
	g := &gatedWriter{gate: make(chan struct{}), inside: make(chan struct{})}
	l := newLogWriter(g)
	l.Write([]byte("one\n"))
	<-g.inside // "one" is being written
	for i := range 100 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	g.gate <- struct{}{} // "one" is out
	<-g.inside           // the next write: the 100 lines
	g.gate <- struct{}{}
	l.Flush()
	var want strings.Builder
	want.WriteString("one\n")
	for i := range 100 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if g.b.String() != want.String() || g.writes != 2 {
		t.Fatalf("%d writes of %q, want 2 of %q", g.writes, g.b.String(), want.String())
	}
}

// A log that cannot keep up holds at most logWriterMax bytes: the
// writer beyond it waits for the output.
func TestLogWriterBounded(t *testing.T) {
	g := &gatedWriter{gate: make(chan struct{}), inside: make(chan struct{})}
	l := newLogWriter(g)
	l.Write([]byte("first\n"))
	<-g.inside
	line := bytes.Repeat([]byte("x"), 1<<10)
	for range logWriterMax / len(line) {
		l.Write(line)
	}
	blocked := make(chan struct{})
	go func() { l.Write([]byte("over\n")); close(blocked) }()
	select {
	case <-blocked:
		t.Fatal("a write beyond logWriterMax did not wait")
	default:
	}
	g.gate <- struct{}{} // "first" out: the waiting lines go next, and room is made
	<-g.inside
	<-blocked
	g.gate <- struct{}{}
	<-g.inside // "over"
	g.gate <- struct{}{}
	l.Flush()
	if n := g.b.Len(); n != len("first\n")+logWriterMax+len("over\n") {
		t.Fatalf("%d bytes out", n)
	}
}
