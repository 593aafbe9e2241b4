package mxps

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		pref  uint16
		class Class
	}{
		{0, SMTP}, {10, SMTP}, {10000, SMTP},
		{10001, Unassigned}, {12799, Unassigned},
		{12800, MXPSSMTP}, {12816, MXPSSMTP}, {13040, MXPSSMTP},
		{12801, QMTP}, {12817, QMTP}, {13025, QMTP}, {13041, QMTP},
		{12802, Unassigned}, {12815, Unassigned}, {13042, Unassigned}, {13055, Unassigned},
		{13056, Unassigned}, {13057, Unassigned}, {65535, Unassigned},
	}
	for _, c := range cases {
		if got := Classify(c.pref); got != c.class {
			t.Errorf("Classify(%d) = %v, want %v", c.pref, got, c.class)
		}
	}
}

// TestClassifyAll checks every preference against the rule as the qmtpc
// patch states it, and counts the QMTP slice: exactly 16 preferences.
func TestClassifyAll(t *testing.T) {
	qmtp := 0
	for p := 0; p <= 65535; p++ {
		pref := uint16(p)
		want := pref >= 12800 && pref <= 13055 && pref%16 == 1
		if IsQMTP(pref) != want {
			t.Fatalf("IsQMTP(%d) = %v", pref, !want)
		}
		if want {
			qmtp++
		}
		_, inRange := Slice(pref)
		if inRange != (p >= 12800 && p <= 13055) {
			t.Fatalf("Slice(%d) in range = %v", p, inRange)
		}
	}
	if qmtp != 16 {
		t.Fatalf("%d QMTP preferences, want 16", qmtp)
	}
}

func TestOrder(t *testing.T) {
	in := []MX{{20, "c"}, {10, "a1"}, {12801, "q"}, {10, "a2"}, {10, "a3"}, {5, "z"}}
	seen := map[string]bool{}
	for seed := uint64(0); seed < 64; seed++ {
		out := Order(in, rand.New(rand.NewPCG(seed, 1)))
		if len(out) != len(in) {
			t.Fatalf("Order lost records: %v", out)
		}
		if out[0].Host != "z" || out[4].Host != "c" || out[5].Host != "q" {
			t.Fatalf("Order(%v) = %v: not sorted by preference", in, out)
		}
		mid := []string{out[1].Host, out[2].Host, out[3].Host}
		sorted := slices.Clone(mid)
		slices.Sort(sorted)
		if !slices.Equal(sorted, []string{"a1", "a2", "a3"}) {
			t.Fatalf("equal preferences %v", mid)
		}
		seen[mid[0]+mid[1]+mid[2]] = true
	}
	// With 64 seeds all 6 permutations of the three equal records appear
	// unless the order is not random.
	if len(seen) != 6 {
		t.Fatalf("equal preferences came out in %d orders over 64 seeds, want all 6: %v", len(seen), seen)
	}
	if in[0].Host != "c" {
		t.Fatal("Order modified its input")
	}
	// The same seed gives the same order: tests can rely on it.
	a := Order(in, rand.New(rand.NewPCG(7, 7)))
	b := Order(in, rand.New(rand.NewPCG(7, 7)))
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different order")
	}
}

func TestAttempts(t *testing.T) {
	got := Attempts(12801, "mx.example", "192.0.2.1", Ports{})
	want := []Attempt{
		{ProtoQMTP, "192.0.2.1:209", "mx.example", 12801, false},
		{ProtoSMTP, "192.0.2.1:25", "mx.example", 12801, false},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("QMTP exchanger: %v, want %v", got, want)
	}
	got = Attempts(12800, "mx.example", "2001:db8::1", Ports{SMTP: "2525"})
	want = []Attempt{{ProtoSMTP, "[2001:db8::1]:2525", "mx.example", 12800, false}}
	if !slices.Equal(got, want) {
		t.Fatalf("SMTP exchanger: %v, want %v", got, want)
	}
	// An unassigned preference is SMTP for a sender.
	if got := Attempts(13042, "h", "192.0.2.1", Ports{}); len(got) != 1 || got[0].Protocol != ProtoSMTP {
		t.Fatalf("unassigned: %v", got)
	}
}
