package queue

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

// systemQueue lays out a system queue as make install does (the maildrop
// root's, mode 1733) and returns it with the environment that makes
// root's qbox use it.
func systemQueue(t *testing.T) (spool.SystemQueue, []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a system queue (its maildrop is root's): run the tests as root, as CI does")
	}
	q := spool.SystemQueue{Root: filepath.Join(t.TempDir(), "qbox")}
	if err := q.Create(); err != nil {
		t.Fatal(err)
	}
	env := []string{"QBOX_SYSTEM_QUEUE=" + q.Root}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QBOX_SPOOL=") && !strings.HasPrefix(kv, "QBOX_SYSTEM_QUEUE=") {
			env = append(env, kv)
		}
	}
	return q, env
}

// drop leaves a message in the maildrop as a user's sendmail does, written
// age ago.
func drop(t *testing.T, q spool.SystemQueue, age time.Duration) {
	t.Helper()
	msg := "Subject: waiting\n\nfor a pickup\n"
	paths, err := spool.Drop(q.DropDir(), proto.Envelope{Sender: "user@example.test", Recipients: []string{"rcpt@example.test"}},
		strings.NewReader(msg), int64(len(msg)), "hub down")
	if err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(-age)
	for _, p := range paths {
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return testpeer.ExitCode(t, cmd.Run()), stdout.String(), stderr.String()
}

// TestCheckCountsTheMaildrop: mail that waits in the maildrop alone (no
// runner picked it up) makes the check, with its default thresholds, a
// WARNING, then CRITICAL as it ages, naming the maildrop in the text and
// the perfdata; --crit-stale makes waiting drops CRITICAL when no pickup
// completed in that time, and a pickup (which stamps the queue) clears
// it.
func TestCheckCountsTheMaildrop(t *testing.T) {
	q, env := systemQueue(t)
	code, out, stderr := run(t, env, "queue", "check")
	if code != 0 || !strings.HasPrefix(out, "QUEUE OK - 0 message(s) queued, oldest 0s, 0 held, 0 in the maildrop, last pickup never |") {
		t.Fatalf("an empty system queue: exit %d, %q %s", code, out, stderr)
	}

	drop(t, q, 2*time.Hour)
	code, out, _ = run(t, env, "queue", "check")
	if code != 1 || !strings.HasPrefix(out, "QUEUE WARNING - 0 message(s) queued, oldest 0s, 0 held, 1 in the maildrop, oldest 2h0m,") ||
		!strings.Contains(out, "a drop waiting for pickup older than 1h") {
		t.Errorf("a drop waiting 2 hours: exit %d, %q; want 1, WARNING", code, out)
	}
	if !regexp.MustCompile(` maildrop=1;;;0 maildrop_oldest=7[0-9]{3}s;3600;14400;0\n$`).MatchString(out) || strings.Count(out, "\n") != 1 {
		t.Errorf("perfdata of the maildrop: %q", out)
	}
	if code, out, _ = run(t, env, "queue", "check", "--warn-drop-count", "0", "--crit-drop-age", "90m"); code != 2 || !strings.HasPrefix(out, "QUEUE CRITICAL - ") {
		t.Errorf("--crit-drop-age 90m: exit %d, %q; want 2", code, out)
	}
	if code, out, _ = run(t, env, "queue", "check", "--warn-drop-age", "0", "--crit-drop-age", "0", "--crit-stale", "1h"); code != 2 ||
		!strings.Contains(out, "no pickup for 1h while drops wait") {
		t.Errorf("--crit-stale 1h, never a pickup: exit %d, %q; want 2", code, out)
	}

	// A pickup takes the drop and stamps the queue.
	if code, _, stderr := run(t, env, "queue", "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d: %s", code, stderr)
	}
	code, out, _ = run(t, env, "queue", "check", "--crit-stale", "1h")
	if code != 0 || !strings.Contains(out, ", 0 in the maildrop, last pickup 0s ago") || !regexp.MustCompile(` last_pickup=[0-9]+s;;3600;0\n$`).MatchString(out) {
		t.Errorf("after a pickup: exit %d, %q; want OK with the pickup's time", code, out)
	}
	// The picked message's age is still the queue's to judge.
	if !strings.HasPrefix(out, "QUEUE OK - 1 message(s) queued") {
		t.Errorf("the picked message is not counted in the queue: %q", out)
	}
}

// TestCheckUsage: with no thresholds the check runs on its documented
// defaults; a bad command line is UNKNOWN (3) with one line on stderr
// and nothing on stdout, as Nagios plugins do.
func TestCheckUsage(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := qbox(t, dir, "check")
	if code != 0 || !strings.HasPrefix(out, "QUEUE OK - ") || !strings.Contains(out, "oldest=0s;3600;86400;0") || stderr != "" {
		t.Errorf("check without thresholds: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for _, args := range [][]string{
		{"--warn-age", "soon"},
		{"--bogus"},
		{"--warn-count", "-1"},
		{"--warn-age"},
		{"extra"},
	} {
		code, out, stderr := qbox(t, dir, append([]string{"check"}, args...)...)
		if code != 3 || out != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "qbox queue check: ") {
			t.Errorf("check %v: exit %d, stdout %q, stderr %q; want 3 and one line on stderr", args, code, out, stderr)
		}
	}
}

// TestMetrics: qbox queue metrics writes the queue's state in Prometheus'
// text format, as a Prometheus text parser reads it, and -o writes the
// same into a file that replaces the old one whole.
func TestMetrics(t *testing.T) {
	q, env := systemQueue(t)
	sp, err := spool.Open(q.QueueDir())
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, sp, "deferred@example.test", "Subject: a\n\na\n", "451 hub busy", 3*time.Hour, "a@example.test", "b@example.test")
	enqueue(t, sp, "fresh@example.test", "Subject: b\n\nb\n", "", time.Minute, "c@example.test")
	drop(t, q, 10*time.Minute)
	picked := time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC)
	if err := sp.Record(spool.StampPickup, picked); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := run(t, env, "queue", "metrics")
	if code != 0 {
		t.Fatalf("metrics: exit %d: %s", code, stderr)
	}
	mf := parseMetrics(t, out)
	for _, c := range []struct {
		name, state string
		want        float64
	}{
		{"qbox_queue_messages", "queued", 1},
		{"qbox_queue_messages", "deferred", 1},
		{"qbox_queue_messages", "held", 0},
		{"qbox_queue_messages", "malformed", 0},
		{"qbox_queue_maildrop_messages", "", 1},
		{"qbox_queue_last_pickup_timestamp_seconds", "", float64(picked.Unix())},
		{"qbox_queue_last_delivery_timestamp_seconds", "", 0},
	} {
		if got, ok := value(mf, c.name, c.state); !ok || got != c.want {
			t.Errorf("%s{state=%q} = %v (found %v), want %v", c.name, c.state, got, ok, c.want)
		}
	}
	if age, _ := value(mf, "qbox_queue_oldest_age_seconds", ""); age < 3*3600 || age > 4*3600 {
		t.Errorf("oldest age %v s, want about 3 hours", age)
	}
	if age, _ := value(mf, "qbox_queue_maildrop_oldest_age_seconds", ""); age < 600 || age > 3600 {
		t.Errorf("maildrop oldest age %v s, want about 10 minutes", age)
	}

	file := filepath.Join(t.TempDir(), "qbox.prom")
	os.WriteFile(file, []byte("stale\n"), 0o644)
	if code, _, stderr := run(t, env, "queue", "metrics", "-o", file); code != 0 {
		t.Fatalf("metrics -o: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := value(parseMetrics(t, string(b)), "qbox_queue_messages", "deferred"); got != 1 || strings.Contains(string(b), "stale") {
		t.Errorf("the file -o wrote:\n%s", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 1 {
		t.Errorf("-o left %d files beside its own", len(entries)-1)
	}
}

func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("not Prometheus' text format: %v\n%s", err, text)
	}
	return mf
}

// value is the gauge name's value, with the label state when it is not
// empty.
func value(mf map[string]*dto.MetricFamily, name, state string) (float64, bool) {
	f, ok := mf[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := state == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "state" && l.GetValue() == state {
				match = true
			}
		}
		if match {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestCheckStuckIsCritical: a message that failed for good and whose
// bounce could not be sent (spool.Message.Stuck) makes the check
// CRITICAL whatever the thresholds, and counts in the metrics.
func TestCheckStuckIsCritical(t *testing.T) {
	now := time.Now()
	st := State{Queued: 1, Stuck: 1, Oldest: now.Add(-time.Minute)}
	var out bytes.Buffer
	if v := Check(&out, st, Limits{}, now); v != Critical || !strings.HasPrefix(out.String(), "QUEUE CRITICAL - 1 message(s) queued, oldest 1m, 0 held, 1 stuck: 1 message(s) stuck") ||
		!strings.Contains(out.String(), " stuck=1;;0;0") {
		t.Errorf("verdict %v, %q; want CRITICAL naming the stuck message", v, out.String())
	}
	var m bytes.Buffer
	if err := WriteMetrics(&m, Registry(st, now)); err != nil {
		t.Fatal(err)
	}
	if got, ok := value(parseMetrics(t, m.String()), "qbox_queue_messages", "stuck"); !ok || got != 1 {
		t.Errorf("qbox_queue_messages{state=stuck} = %v (%v), want 1", got, ok)
	}
}

// The alert says why mail waits: the latest error among the waiting
// messages (a relay refusing the password keeps mail queued, and the
// admin reads the reason in the check, not only in qbox queue show).
func TestCheckSaysTheLastError(t *testing.T) {
	now := time.Now()
	st := State{Deferred: 1, Oldest: now.Add(-2 * time.Hour), LastError: "relay smtp://mailer@relay.example:587: authentication failed:\n535 5.7.8 bad"}
	var out bytes.Buffer
	if v := Check(&out, st, DefaultLimits, now); v != Warning ||
		!strings.Contains(out.String(), "; last error: relay smtp://mailer@relay.example:587: authentication failed: 535 5.7.8 bad |") {
		t.Errorf("verdict %v, %q; want WARNING with the last error on the status line", v, out.String())
	}
}
