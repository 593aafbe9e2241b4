package linksim

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every connection by copying input back.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestProxyForwardsBytesIntactAndAtMostAtRate(t *testing.T) {
	p, err := Start(echoServer(t), Link{Rate: 20000, Latency: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 10000)
	rand.Read(data)
	start := time.Now()
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatalf("echo through the link: got %d bytes, not the %d sent", len(got), len(data))
	}
	// A lower bound only: the link can never be faster than its rate
	// plus one latency each way (slow machines only add time).
	if min := time.Second/2 + 100*time.Millisecond; elapsed < min {
		t.Errorf("10000 bytes at 20000 B/s with 2x50ms took %v, less than %v", elapsed, min)
	}
	if p.BytesUp() != 10000 || p.BytesDown() != 10000 {
		t.Errorf("counted up %d down %d", p.BytesUp(), p.BytesDown())
	}
}

// A server that answers "2:ok," for each byte "x" it reads.
func replyServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					if _, err := c.Write([]byte("2:ok,")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestCutAfterReplies(t *testing.T) {
	p, err := Start(replyServer(t), Link{CutAfterReplies: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("xxxxxxxx")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "2:ok,2:ok,2:ok," {
		t.Fatalf("client read %q before the cut, want exactly three replies", got)
	}
}

func TestReplyCounterSplitsChunks(t *testing.T) {
	r := &replyCounter{limit: 2}
	stream := []byte("3:abc,0:,12:hello world!,")
	total := 0
	for i := 0; i < len(stream); i += 2 {
		end := min(i+2, len(stream))
		k, hit := r.feed(stream[i:end])
		total += k
		if hit {
			break
		}
	}
	if total != len("3:abc,0:,") {
		t.Fatalf("forwarded %d bytes, want %d", total, len("3:abc,0:,"))
	}
}
