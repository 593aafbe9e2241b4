// Package linksim simulates a slow network link for tests and benchmarks:
// a TCP proxy on 127.0.0.1 that serialises each direction at a byte rate
// and delays every chunk by a one-way latency, like a modem line. It can
// also cut the connection after a number of server replies, to test what
// a client does when a session ends halfway.
package linksim

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Link describes the simulated line. The zero value is a plain proxy.
type Link struct {
	// Rate is bytes per second in each direction; 0 means unlimited.
	Rate int
	// Latency is the one-way delay added to every chunk.
	Latency time.Duration
	// Buffer bounds the bytes in flight per direction (queued at the
	// "modem" or on the line); beyond it the proxy stops reading and TCP
	// pushes back on the sender. 0 means 64 KiB.
	Buffer int
	// CutAfterReplies, if positive, closes the client's connection (and
	// the server's) right after that many complete netstrings have been
	// forwarded from the server to the client: a QMTP or QMQP session
	// broken after exactly N replies.
	CutAfterReplies int
}

// Proxy forwards connections on Addr to a target through a Link.
type Proxy struct {
	Addr   string
	link   Link
	target string
	ln     net.Listener

	up, down atomic.Int64 // bytes forwarded client→server, server→client
	conns    atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     map[net.Conn]struct{}
	closed   bool
}

// Start listens on 127.0.0.1 (a free port) and forwards every accepted
// connection to target.
func Start(target string, link Link) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), link: link, target: target, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// BytesUp returns the bytes forwarded from clients to the server so far.
func (p *Proxy) BytesUp() int64 { return p.up.Load() }

// BytesDown returns the bytes forwarded from the server to clients.
func (p *Proxy) BytesDown() int64 { return p.down.Load() }

// Connections returns the number of connections accepted.
func (p *Proxy) Connections() int64 { return p.conns.Load() }

// Close stops listening, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	cut := make(chan struct{})
	var cutOnce sync.Once
	// A cut ends the session as a server closing would: the client
	// reads the replies forwarded so far, then end of file. What it
	// still sends is read and dropped rather than refused, so it never
	// gets a reset that could discard replies it has not read yet.
	cutNow := func() {
		cutOnce.Do(func() {
			close(cut)
			server.Close()
			if tc, ok := client.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pipe(server, client, &p.up, nil, cut)
	}()
	go func() {
		defer wg.Done()
		var counter *replyCounter
		if p.link.CutAfterReplies > 0 {
			counter = &replyCounter{limit: p.link.CutAfterReplies, onLimit: cutNow}
		}
		p.pipe(client, server, &p.down, counter, cut)
	}()
	wg.Wait()
}

// piece is a chunk of data on the line with the time it reaches the far
// end.
type piece struct {
	data   []byte
	arrive time.Time
}

// pipe forwards src to dst through the link. A reader goroutine puts
// pieces on the line (each leaving when the line is free, taking
// len/Rate, arriving Latency later); the writer delivers them on time.
func (p *Proxy) pipe(dst, src net.Conn, count *atomic.Int64, counter *replyCounter, cut chan struct{}) {
	buffer := p.link.Buffer
	if buffer <= 0 {
		buffer = 64 << 10
	}
	pieceSize := 16 << 10
	if p.link.Rate > 0 {
		// Small pieces at low rates, so arrival is spread as on a line.
		pieceSize = min(max(p.link.Rate/20, 64), 16<<10)
	}
	line := make(chan piece, max(buffer/pieceSize, 1))
	readerDone := make(chan struct{})
	defer func() { <-readerDone }()
	go func() {
		defer close(readerDone)
		defer close(line)
		var free time.Time // when the line has sent everything queued
		buf := make([]byte, pieceSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				now := time.Now()
				if free.Before(now) {
					free = now
				}
				if p.link.Rate > 0 {
					free = free.Add(time.Duration(int64(n) * int64(time.Second) / int64(p.link.Rate)))
				}
				data := append([]byte(nil), buf[:n]...)
				select {
				case line <- piece{data: data, arrive: free.Add(p.link.Latency)}:
				case <-cut:
					io.Copy(io.Discard, src)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for pc := range line {
		if d := time.Until(pc.arrive); d > 0 {
			select {
			case <-time.After(d):
			case <-cut:
				return
			}
		}
		data := pc.data
		limitHit := false
		if counter != nil {
			var k int
			k, limitHit = counter.feed(data)
			data = data[:k]
		}
		if len(data) > 0 {
			// Counted before the write: a client that has read these
			// bytes (and exited) finds them in the count.
			count.Add(int64(len(data)))
			if _, err := dst.Write(data); err != nil {
				src.Close()
				for range line { // let the reader finish
				}
				return
			}
		}
		if limitHit {
			counter.onLimit()
			return
		}
	}
	// Source ended: pass the half-close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// replyCounter follows netstrings in a byte stream and stops it right
// after the limit-th one. Malformed input stops the counting (nothing more
// is cut), which is fine for a test tool.
type replyCounter struct {
	limit   int
	onLimit func()
	seen    int
	state   int   // 0 length digits, 1 body, 2 comma, 3 broken
	length  int64 // digits so far / body bytes left
}

// feed returns how many bytes of b to forward and whether the limit was
// reached at that point.
func (r *replyCounter) feed(b []byte) (int, bool) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch r.state {
		case 0:
			switch {
			case c >= '0' && c <= '9':
				r.length = r.length*10 + int64(c-'0')
			case c == ':':
				r.state = 1
				if r.length == 0 {
					r.state = 2
				}
			default:
				r.state = 3
			}
		case 1:
			skip := min(r.length, int64(len(b)-i))
			r.length -= skip
			i += int(skip) - 1
			if r.length == 0 {
				r.state = 2
			}
		case 2:
			if c != ',' {
				r.state = 3
				continue
			}
			r.seen++
			r.state, r.length = 0, 0
			if r.seen >= r.limit {
				return i + 1, true
			}
		}
	}
	return len(b), false
}
