package serve

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestTapCountsRefusals: the refusals serverloop logs (a client outside
// --allow; no session free) count by protocol and reason, an event under
// a group or of no server counts nothing, and every record still reaches
// the log as it was.
func TestTapCountsRefusals(t *testing.T) {
	m := NewMetrics()
	var out bytes.Buffer
	log := slog.New(m.Tap(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Warn("client not authorized", "proto", "QMQP", "remote", "192.0.2.1", "ms", 0)
	log.Warn("connection refused: too many connections", "proto", "SMTP", "remote", "192.0.2.2", "why", "waiting room full")
	log.With("proto", "QMTP").Warn("client not authorized", "remote", "192.0.2.3")
	log.WithGroup("other").Warn("client not authorized", "proto", "QMQP")
	log.Warn("client not authorized", "proto", "HTTP")
	log.Info("connection", "proto", "SMTP") // below the log's level: counted, not printed
	for _, c := range []struct {
		proto, reason string
		want          float64
	}{{"qmqp", "not_authorized", 1}, {"smtp", "busy", 1}, {"qmtp", "not_authorized", 1}, {"qmqp", "busy", 0}} {
		if got := m.refused.Value(c.proto, c.reason); got != c.want {
			t.Errorf("refused{%s,%s} = %v, want %v", c.proto, c.reason, got, c.want)
		}
	}
	if got := m.sessions.Value("smtp"); got != 1 {
		t.Errorf("smtp sessions %v, want 1", got)
	}
	if n := strings.Count(out.String(), "\n"); n != 5 || strings.Contains(out.String(), "msg=connection") {
		t.Errorf("the log got %d lines, want the 5 warnings:\n%s", n, out.String())
	}
}
