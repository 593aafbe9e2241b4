package mxps

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswerRecords feeds arbitrary DNS responses (the network input the
// direct resolver reads) to the alias-chain walk. miekg/dns bounds a
// message at 64 KiB before allocating; the walk must stay bounded on
// loops and long chains and return only records of the asked type owned by
// the chain's end.
func FuzzAnswerRecords(f *testing.F) {
	seed := func(rrs ...string) {
		m := new(dns.Msg)
		m.SetQuestion("d.t.", dns.TypeMX)
		for _, r := range rrs {
			rr, err := dns.NewRR(r)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed("d.t. 1 IN MX 12801 q.t.")
	seed("d.t. 1 IN CNAME e.t.", "e.t. 1 IN MX 0 .")
	seed("d.t. 1 IN CNAME e.t.", "e.t. 1 IN CNAME d.t.")
	seed("d.t. 1 IN CNAME e.t.", "e.t. 1 IN A 192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		rrs, owner := answerRecords(m, "d.t.", dns.TypeMX)
		for _, rr := range rrs {
			if rr.Header().Rrtype != dns.TypeMX || !strings.EqualFold(rr.Header().Name, owner) {
				t.Fatalf("returned %v for owner %s", rr, owner)
			}
		}
	})
}
