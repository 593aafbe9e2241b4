// Package dnstest runs a real DNS server (github.com/miekg/dns) on
// 127.0.0.1 for tests: the test double for the one peer qbox cannot run
// locally, the Internet's DNS. It answers authoritatively from a list of
// records in zone-file syntax, with chosen names failing with SERVFAIL,
// NXDOMAIN or no answer at all.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is the data the server answers from.
type Zone struct {
	// Records in zone-file syntax, e.g. "example.test. 300 IN MX 10 mx.example.test.".
	Records []string
	// Rcode answers every query for a name with this response code
	// (dns.RcodeServerFailure, dns.RcodeNameError, ...).
	Rcode map[string]int
	// Drop names whose queries are never answered (a timeout).
	Drop []string
	// NoChase lists aliases whose target records are left out of the
	// answer, as an authoritative server for another zone does: the
	// client must ask again for the target.
	NoChase []string
}

// Server is a running DNS server.
type Server struct {
	Addr string // 127.0.0.1:port, UDP and TCP

	mu      sync.Mutex
	queries []string // "name TYPE", in arrival order
	records []dns.RR
	zone    Zone
}

// Start starts a server answering from z on UDP and TCP at the same
// 127.0.0.1 port, stopped when the test ends.
func Start(t testing.TB, z Zone) *Server {
	t.Helper()
	s := &Server{zone: z}
	for _, r := range z.Records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("dnstest: record %q: %v", r, err)
		}
		s.records = append(s.records, rr)
	}
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatalf("dnstest: no port free for both UDP and TCP: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: l, Handler: s}
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("dnstest: server did not start")
		}
	}
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return s
}

// Queries returns the questions asked so far, as "name TYPE".
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

func has(list []string, name string) bool {
	for _, n := range list {
		if strings.EqualFold(dns.Fqdn(n), name) {
			return true
		}
	}
	return false
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries = append(s.queries, strings.TrimSuffix(name, ".")+" "+dns.TypeToString[q.Qtype])
	s.mu.Unlock()
	if has(s.zone.Drop, name) {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for n, rcode := range s.zone.Rcode {
		if strings.EqualFold(dns.Fqdn(n), name) {
			m.Rcode = rcode
			w.WriteMsg(m)
			return
		}
	}
	owner := name
	for hop := 0; hop < 10; hop++ {
		var cname *dns.CNAME
		found := false
		for _, rr := range s.records {
			if !strings.EqualFold(rr.Header().Name, owner) {
				continue
			}
			if c, ok := rr.(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME {
				cname = c
			}
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			}
		}
		if found || cname == nil {
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		if has(s.zone.NoChase, owner) {
			w.WriteMsg(m)
			return
		}
		owner = strings.ToLower(cname.Target)
	}
	if len(m.Answer) == 0 && !s.exists(owner) {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

func (s *Server) exists(name string) bool {
	for _, rr := range s.records {
		if strings.EqualFold(rr.Header().Name, name) {
			return true
		}
	}
	return false
}
