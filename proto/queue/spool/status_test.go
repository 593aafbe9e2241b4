package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStamps: a stamp reads back the time recorded, a missing one is the
// zero time, and a stamp that is a symlink or garbage is an error, never
// followed or taken for a time.
func TestStamps(t *testing.T) {
	sp, err := Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := sp.LastStamp(StampPickup); err != nil || !got.IsZero() {
		t.Fatalf("never recorded: %v, %v", got, err)
	}
	when := time.Date(2026, 12, 7, 0, 1, 2, 345, time.UTC)
	for i := 0; i < 2; i++ { // the second replaces the first
		if err := sp.Record(StampPickup, when.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := sp.LastStamp(StampPickup); err != nil || !got.Equal(when.Add(time.Hour)) {
		t.Errorf("recorded %v, read %v, %v", when.Add(time.Hour), got, err)
	}
	if entries, _ := os.ReadDir(sp.statusDir()); len(entries) != 1 {
		t.Errorf("%d files in status/, want the stamp alone", len(entries))
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(when.Format(time.RFC3339Nano)), 0o600)
	if err := os.Symlink(secret, filepath.Join(sp.statusDir(), string(StampDelivery))); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.LastStamp(StampDelivery); err == nil {
		t.Error("a stamp that is a symlink was followed")
	}
	if err := sp.Record(StampDelivery, when); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(secret); !strings.HasPrefix(string(b), "2026-12-07T00:01:02") || len(b) != len(when.Format(time.RFC3339Nano)) {
		t.Errorf("Record wrote through a symlink: %q", b)
	}
	os.WriteFile(filepath.Join(sp.statusDir(), string(StampPickup)), []byte(strings.Repeat("9", 1<<20)), 0o600)
	if _, err := sp.LastStamp(StampPickup); err == nil {
		t.Error("a megabyte of garbage read as a time")
	}
}

func FuzzParseStamp(f *testing.F) {
	f.Add([]byte("2026-12-07T00:01:02.000000345Z\n"))
	f.Add([]byte("2026-12-07T00:01:02+01:00"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseStamp(b)
		if err != nil {
			return
		}
		if len(b) > maxStamp {
			t.Fatalf("%d bytes read as a time", len(b))
		}
		again, err := ParseStamp([]byte(got.Format(time.RFC3339Nano)))
		if err != nil || !again.Equal(got) {
			t.Fatalf("%v does not read back: %v %v", got, again, err)
		}
	})
}
