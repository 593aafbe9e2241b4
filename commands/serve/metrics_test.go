package serve_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

// scrape reads serve's /metrics and parses it as Prometheus does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v\n%s", resp.Status, err, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus' text format: %v\n%s", err, b)
	}
	return mf
}

// sample is the metric name's value with the labels given ("k=v" each).
func sample(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := mf[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// TestServeMetrics: serve --metrics counts a QMQP delivery (K, two
// recipients), a QMQP message refused for its size (D) and a QMTP
// delivery (K, two recipients): sessions by protocol, messages and
// recipients by reply, bytes, and the store's latency for the two
// stored; /metrics is parsed by Prometheus' own text parser.
func TestServeMetrics(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	s := startServe(t, "--maildir", dir, "--max-size", "1K", "--metrics", "127.0.0.1:0")
	maddr := listeningAddr(t, s, "metrics")

	msg := []byte("Subject: metrics\n\ncounted\n")
	mustK(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test", "c@example.test"}}, msg)
	big := []byte("Subject: big\n\n" + strings.Repeat("x", 2000) + "\n")
	if r, err := sendQMQP(t, s.qmqp, proto.Envelope{Sender: "a@example.test", Recipients: []string{"b@example.test"}}, big); err != nil || r.Status != proto.Permanent {
		t.Fatalf("a message over --max-size: %q, %v; want D", r.String(), err)
	}
	c, err := net.Dial("tcp", s.qmtp)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(qmtpPackage(msg, false, "a@example.test", "d@example.test", "e@example.test"))
	if rs, err := readReplies(c, 2, time.Minute); err != nil || len(rs) != 2 || rs[0].Status != proto.OK || rs[1].Status != proto.OK {
		t.Fatalf("QMTP replies %s, %v; want two K", fmtReplies(rs), err)
	}
	c.Close()
	// The session lines are written once the sessions end: wait for
	// them (the events the metrics count), then scrape.
	if !waitLog(t, s, `to=b@example.test,c@example.test`, `reply="Dsorry`, `msg=connection proto=QMTP`) {
		t.Fatalf("serve did not log the three sessions")
	}
	mf := scrape(t, maddr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"qbox_serve_sessions_total", []string{"proto=qmqp"}, 2},
		{"qbox_serve_sessions_total", []string{"proto=qmtp"}, 1},
		{"qbox_serve_sessions_total", []string{"proto=smtp"}, 0},
		{"qbox_serve_messages_total", []string{"proto=qmqp", "result=K"}, 1},
		{"qbox_serve_messages_total", []string{"proto=qmqp", "result=D"}, 1},
		{"qbox_serve_messages_total", []string{"proto=qmqp", "result=Z"}, 0},
		{"qbox_serve_messages_total", []string{"proto=qmtp", "result=K"}, 1},
		{"qbox_serve_recipients_total", []string{"proto=qmqp", "result=K"}, 2},
		{"qbox_serve_recipients_total", []string{"proto=qmqp", "result=D"}, 1},
		{"qbox_serve_recipients_total", []string{"proto=qmtp", "result=K"}, 2},
		{"qbox_serve_refused_connections_total", []string{"proto=qmqp", "reason=not_authorized"}, 0},
		{"qbox_serve_store_seconds", nil, 2},
	} {
		if got := sample(t, mf, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := sample(t, mf, "qbox_serve_received_bytes_total", "proto=qmtp"); got < float64(len(msg)) {
		t.Errorf("QMTP bytes %v, want at least the message's %d", got, len(msg))
	}
	if got := sample(t, mf, "qbox_serve_received_bytes_total", "proto=qmqp"); got < float64(len(msg)) {
		t.Errorf("QMQP bytes %v, want at least the message's %d", got, len(msg))
	}
}

// TestServeMetricsAccess: --metrics on an address that is not loopback
// is refused without --allow (as the mail ports are); with --allow, a
// client outside it gets 403.
func TestServeMetricsAccess(t *testing.T) {
	cmd := exec.Command(testpeer.Binary(t), "serve", "--maildir", t.TempDir(), "--qmqp", "127.0.0.1:0", "--qmtp", "", "--metrics", "0.0.0.0:0")
	out, err := cmd.CombinedOutput()
	if code := testpeer.ExitCode(t, err); code != 100 || !strings.Contains(string(out), "which is not a loopback address, and no --allow is given") {
		t.Errorf("--metrics 0.0.0.0:0 without --allow: exit %d, %s", code, out)
	}
	s := startServe(t, "--maildir", t.TempDir(), "--metrics", "127.0.0.1:0", "--allow", "192.0.2.0/24")
	resp, err := http.Get(fmt.Sprintf("http://%s/metrics", listeningAddr(t, s, "metrics")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a client outside --allow: %s, want 403", resp.Status)
	}
}
