package promtext

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What promtext writes, Prometheus' own parser reads back: counters with
// labels (a value that needs escaping among them), a histogram's
// cumulative buckets, sum and count, and a gauge from a Func.
func TestPrometheusParsesIt(t *testing.T) {
	c := NewCounter("t_total", "A counter\\with \"quotes\"\nand a line.", "proto", "result")
	c.Add(2, "qmtp", "K")
	c.Add(1, "qmtp", "K")
	c.Add(1, "odd\"\\\nvalue", "Z")
	h := NewHistogram("t_seconds", "A histogram.", ExponentialBuckets(0.5, 2, 3)) // 0.5, 1, 2
	for _, x := range []float64{0.1, 0.5, 1.5, 9} {
		h.Observe(x)
	}
	var r Registry
	r.Register(c, h, Func(func(w *bufio.Writer) { Gauge(w, "t_gauge", "A gauge.", 7) }))
	var out bytes.Buffer
	if _, err := r.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(out.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var k, odd float64
	for _, m := range mfs["t_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		switch {
		case l["proto"] == "qmtp" && l["result"] == "K":
			k = m.GetCounter().GetValue()
		case l["proto"] == "odd\"\\\nvalue":
			odd = m.GetCounter().GetValue()
		}
	}
	if k != 3 || odd != 1 || c.Value("qmtp", "K") != 3 {
		t.Errorf("counter: K %v, odd %v, Value %v\n%s", k, odd, c.Value("qmtp", "K"), out.String())
	}
	if got := mfs["t_total"].GetHelp(); got != "A counter\\with \"quotes\"\nand a line." {
		t.Errorf("help read back as %q", got)
	}
	hist := mfs["t_seconds"].GetMetric()[0].GetHistogram()
	want := []uint64{2, 2, 3, 4} // le 0.5 (0.1 and 0.5), le 1, le 2 (1.5), +Inf
	for i, b := range hist.GetBucket() {
		if b.GetCumulativeCount() != want[i] {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[i])
		}
	}
	if hist.GetSampleCount() != 4 || hist.GetSampleSum() != 11.1 {
		t.Errorf("count %d sum %v, want 4 and 11.1", hist.GetSampleCount(), hist.GetSampleSum())
	}
	if g := mfs["t_gauge"].GetMetric()[0].GetGauge().GetValue(); g != 7 {
		t.Errorf("gauge %v, want 7", g)
	}
}

// WriteFile replaces the file whole and leaves no temporary file behind.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "qbox.prom")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := NewGauge("t_g", "G.")
	g.Set(1)
	var r Registry
	r.Register(g)
	if err := WriteFile(path, &r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != "# HELP t_g G.\n# TYPE t_g gauge\nt_g 1\n" {
		t.Errorf("file: %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries in the directory, want the file alone", len(ents))
	}
}
