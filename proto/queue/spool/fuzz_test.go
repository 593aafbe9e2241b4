package spool

import (
	"bytes"
	"testing"
	"time"
)

// FuzzReadDropEnvelope: a drop file is any user's input to root's pickup.
// Whatever its bytes, reading its envelope never panics, and an envelope
// read has recipients and a message offset inside the file.
func FuzzReadDropEnvelope(f *testing.F) {
	f.Add([]byte(dropMagic + "Fa@x.test\nS1700000000000000000\nTb@y.test\nEhub down\n\nSubject: x\n\nbody\n"))
	f.Add([]byte(dropMagic + "Fa@x.test\nTb@y.test\n\n"))
	f.Add([]byte(dropMagic + "Fa@x.test\nS-1\nTb@y.test\n\nx"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, _, _, off, err := readDropEnvelope(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(env.Recipients) == 0 || off > int64(len(b)) || off < int64(len(dropMagic)) {
			t.Fatalf("envelope %+v at %d of %d bytes", env, off, len(b))
		}
	})
}

// FuzzReadStored: a queue file or state file that is damaged (a disk
// error, a hand edit) is reported or ignored, never a panic; a queue file
// read has recipients and its message inside the file, and the listing
// makes something of any state.
func FuzzReadStored(f *testing.F) {
	f.Add([]byte(storeMagic+"Fa@x.test\nS1700000000000000000\nTb@y.test\n\nbody\n"), []byte(stateMagic+"A1 5 6\nH\nR0 z 7 busy\n"))
	f.Add([]byte(storeMagic+"Fa@x.test\n\n"), []byte(stateMagic+"R-1 d 1 x\nR0 dd 1\nA\n"))
	f.Fuzz(func(t *testing.T, msg, state []byte) {
		m, err := parseStored(bytes.NewReader(msg), "/q/msg/ID", int64(len(msg)), time.Unix(1, 0))
		if err != nil {
			return
		}
		if len(m.rcpts) == 0 || m.offset+m.size != int64(len(msg)) || m.size < 0 {
			t.Fatalf("stored %+v from %d bytes", m, len(msg))
		}
		if st, err := parseState(state); err == nil {
			m.state = st
		}
		if got := m.message(); len(got.States) != len(m.rcpts) {
			t.Fatalf("%d states for %d recipients", len(got.States), len(m.rcpts))
		}
	})
}
