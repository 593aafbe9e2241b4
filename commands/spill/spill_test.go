package spill

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSmallStaysInMemoryLargeSpillsUnlinked(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	for _, size := range []int{0, 1, 100, 101, 250_000} {
		want := bytes.Repeat([]byte("0123456789"), size/10+1)[:size]
		b := &Buffer{Limit: 100}
		if n, err := b.ReadFrom(iotest.OneByteReader(bytes.NewReader(want))); err != nil || n != int64(size) {
			t.Fatalf("size %d: ReadFrom %d, %v", size, n, err)
		}
		for pass := 0; pass < 2; pass++ { // read twice: one copy per recipient
			got, err := io.ReadAll(b.Reader())
			if err != nil || !bytes.Equal(got, want) || b.Size() != int64(size) {
				t.Fatalf("size %d pass %d: read %d bytes (%v), Size %d", size, pass, len(got), err, b.Size())
			}
		}
		if spilled := b.file != nil; spilled != (size > 100) {
			t.Errorf("size %d: spilled %v", size, spilled)
		}
		if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
			t.Errorf("size %d: %d names left in TMPDIR; the file must be unlinked", size, len(entries))
		}
		b.Close()
	}
}

func TestErrorsSayWhich(t *testing.T) {
	t.Setenv("TMPDIR", "/nonexistent/qbox-spill-test")
	b := &Buffer{Limit: 4}
	_, err := b.ReadFrom(strings.NewReader("more than four bytes"))
	var we *WriteError
	if !errors.As(err, &we) || !strings.Contains(err.Error(), "spilling the message to /nonexistent") {
		t.Fatalf("unwritable TMPDIR: %v", err)
	}
	readErr := errors.New("pipe broke")
	_, err = (&Buffer{}).ReadFrom(iotest.ErrReader(readErr))
	if !errors.Is(err, readErr) || errors.As(err, &we) {
		t.Fatalf("read failure: %v", err)
	}
}
