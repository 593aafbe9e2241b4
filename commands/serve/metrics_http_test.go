package serve

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeMetricsHTTP: the /metrics endpoint's own HTTP answers the
// requests a scraper sends (GET, a query, HEAD) and, for anything else,
// 404 (another path) or 400 (no HTTP/1 request line; a head over
// metricsMaxHead), and closes the connection after each reply.
func TestServeMetricsHTTP(t *testing.T) {
	m := NewMetrics()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeMetrics(ctx, l, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeMetrics: %v", err)
		}
	}()
	exchange := func(req string) (status, body string) {
		t.Helper()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute)) // a guard, not a measure
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		status, err = r.ReadString('\n')
		if err != nil {
			t.Fatalf("%.30q: %v", req, err)
		}
		for {
			h, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%.30q: %v", req, err)
			}
			if h == "\r\n" {
				break
			}
		}
		b, err := io.ReadAll(r) // until the server closes
		if err != nil {
			t.Fatalf("%.30q: %v", req, err)
		}
		return strings.TrimSpace(status), string(b)
	}
	for _, c := range []struct {
		req, status, body string
	}{
		{"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n", "HTTP/1.1 200 OK", "qbox_serve_sessions_total"},
		{"GET /metrics?name[]=x HTTP/1.0\n\n", "HTTP/1.1 200 OK", "process_start_time_seconds"},
		{"HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", ""},
		{"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "404 page not found"},
		{"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request", "400"},
		{"GET /metrics HTTP/1.1\r\nX: " + strings.Repeat("x", metricsMaxHead) + "\r\n\r\n", "HTTP/1.1 400 Bad Request", "400"},
	} {
		status, body := exchange(c.req)
		if status != c.status || !strings.Contains(body, c.body) || (c.body == "" && body != "") {
			t.Errorf("%.40q: %s, %.60q; want %s with %q", c.req, status, body, c.status, c.body)
		}
	}
}

// FuzzReadRequestHead: any input, a request head or not, gives a method
// and a path without a query, or an error; never a panic.
func FuzzReadRequestHead(f *testing.F) {
	f.Add("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("GET /metrics?x=1 HTTP/1.0\n\n")
	f.Add("GET /metrics\r\n\r\n")
	f.Add("\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		method, path, err := readRequestHead(bufio.NewReader(io.LimitReader(strings.NewReader(in), metricsMaxHead)))
		if err != nil {
			return
		}
		if method == "" || strings.Contains(path, "?") || !strings.Contains(in, method) {
			t.Fatalf("%q: method %q, path %q", in, method, path)
		}
	})
}
