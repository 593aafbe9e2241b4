// Package promtext writes metrics in Prometheus' text exposition format
// (version 0.0.4): counters, gauges and histograms with fixed label
// names, for `qbox serve --metrics` and `qbox queue metrics`.
//
// It stands in for github.com/prometheus/client_golang, which did the
// same job but whose package initialisers (its default registry, procfs,
// protobuf descriptors) ran at every start of every personality of the
// one binary: about half of the binary's init time, paid by each
// qmail-remote and sendmail call. The format is a few lines of text; the
// tests still read it back with Prometheus' own parser (expfmt).
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// A Collector writes its metric families.
type Collector interface {
	WriteText(w *bufio.Writer)
}

// Registry is an ordered set of collectors.
type Registry struct {
	mu         sync.Mutex
	collectors []Collector
}

// Register adds collectors, written in the order given.
func (r *Registry) Register(cs ...Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, cs...)
}

// WriteTo writes every collector's families.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	cs := slices.Clone(r.collectors)
	r.mu.Unlock()
	cw := &countingWriter{w: w}
	bw := bufio.NewWriter(cw)
	for _, c := range cs {
		c.WriteText(bw)
	}
	err := bw.Flush()
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteFile writes r to path atomically, as node_exporter's textfile
// collector wants: a temporary file in the same directory, renamed over
// path, so a scrape never reads half a file.
func WriteFile(path string, r *Registry) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = r.WriteTo(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Vec is a counter or gauge family: one value per set of label values.
type Vec struct {
	name, help, kind string
	labels           []string
	mu               sync.Mutex
	values           map[string]*series
}

type series struct {
	labels []string
	v      float64
}

func newVec(kind, name, help string, labels []string) *Vec {
	return &Vec{name: name, help: help, kind: kind, labels: labels, values: map[string]*series{}}
}

// NewCounter makes a counter family with the label names given.
func NewCounter(name, help string, labels ...string) *Vec {
	return newVec("counter", name, help, labels)
}

// NewGauge makes a gauge family with the label names given.
func NewGauge(name, help string, labels ...string) *Vec {
	return newVec("gauge", name, help, labels)
}

func (v *Vec) at(values []string) *series {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("promtext: %s takes %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	key := strings.Join(values, "\x00")
	s := v.values[key]
	if s == nil {
		s = &series{labels: slices.Clone(values)}
		v.values[key] = s
	}
	return s
}

// Add adds d to the series of the label values given (creating it at 0).
func (v *Vec) Add(d float64, values ...string) {
	v.mu.Lock()
	v.at(values).v += d
	v.mu.Unlock()
}

// Set sets the series of the label values given.
func (v *Vec) Set(x float64, values ...string) {
	v.mu.Lock()
	v.at(values).v = x
	v.mu.Unlock()
}

// Value is the series' value (0 when it does not exist yet).
func (v *Vec) Value(values ...string) float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.at(values).v
}

// WriteText writes the family, its series sorted by label values.
func (v *Vec) WriteText(w *bufio.Writer) {
	v.mu.Lock()
	all := make([]series, 0, len(v.values))
	for _, s := range v.values {
		all = append(all, *s)
	}
	v.mu.Unlock()
	slices.SortFunc(all, func(a, b series) int { return slices.Compare(a.labels, b.labels) })
	header(w, v.name, v.help, v.kind)
	for _, s := range all {
		sample(w, v.name, v.labels, s.labels, "", "", s.v)
	}
}

// Histogram counts observations into cumulative buckets.
type Histogram struct {
	name, help string
	bounds     []float64
	mu         sync.Mutex
	counts     []uint64 // per bucket, not cumulative; the last is +Inf
	sum        float64
}

// NewHistogram makes a histogram with the upper bounds given (ascending).
func NewHistogram(name, help string, bounds []float64) *Histogram {
	return &Histogram{name: name, help: help, bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

// ExponentialBuckets returns n bounds: start, start×factor, ...
func ExponentialBuckets(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start * math.Pow(factor, float64(i))
	}
	return b
}

// Observe counts one observation.
func (h *Histogram) Observe(x float64) {
	i, _ := slices.BinarySearch(h.bounds, x) // the first bound >= x: le is inclusive
	h.mu.Lock()
	h.counts[i]++
	h.sum += x
	h.mu.Unlock()
}

// WriteText writes the buckets, the sum and the count.
func (h *Histogram) WriteText(w *bufio.Writer) {
	h.mu.Lock()
	counts, sum := slices.Clone(h.counts), h.sum
	h.mu.Unlock()
	header(w, h.name, h.help, "histogram")
	var cum uint64
	for i, c := range counts {
		cum += c
		le := "+Inf"
		if i < len(h.bounds) {
			le = formatFloat(h.bounds[i])
		}
		sample(w, h.name+"_bucket", nil, nil, "le", le, float64(cum))
	}
	sample(w, h.name+"_sum", nil, nil, "", "", sum)
	sample(w, h.name+"_count", nil, nil, "", "", float64(cum))
}

// Func is a collector written by a function (for values read at scrape
// time, such as the process's).
type Func func(w *bufio.Writer)

// WriteText calls f.
func (f Func) WriteText(w *bufio.Writer) { f(w) }

// Gauge writes one gauge family with a single unlabelled sample: for a
// Func.
func Gauge(w *bufio.Writer, name, help string, v float64) {
	header(w, name, help, "gauge")
	sample(w, name, nil, nil, "", "", v)
}

func header(w *bufio.Writer, name, help, kind string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, kind)
}

func sample(w *bufio.Writer, name string, labels, values []string, extraLabel, extraValue string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extraLabel != "" {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			fmt.Fprintf(w, "%s=\"%s\"", l, escapeLabel(values[i]))
		}
		if extraLabel != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			fmt.Fprintf(w, "%s=\"%s\"", extraLabel, escapeLabel(extraValue))
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
