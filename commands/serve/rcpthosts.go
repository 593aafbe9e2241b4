package serve

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// RcptHosts is qmail's control/rcpthosts: the domains this server takes
// mail for from clients that may not relay. A line "example.com" is that
// domain; ".example.com" is every domain below it. Blank lines and lines
// starting with # are skipped; case does not matter.
type RcptHosts struct {
	domains map[string]bool
}

// maxRcptHosts bounds the file read at startup.
const maxRcptHosts = 16 << 20

// LoadRcptHosts reads an rcpthosts file.
func LoadRcptHosts(path string) (*RcptHosts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxRcptHosts {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d an rcpthosts file may have", path, st.Size(), maxRcptHosts)
	}
	r := &RcptHosts{domains: map[string]bool{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.ToLower(strings.TrimSpace(sc.Text()))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r.domains[line] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Allows reports whether rcpt may be accepted from a client that may not
// relay. As in qmail, an address without @ is local and allowed; the
// domain matches a line exactly or through a ".parent" line.
func (r *RcptHosts) Allows(rcpt string) bool {
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return true
	}
	host := strings.ToLower(rcpt[at+1:])
	if host == "" {
		return false
	}
	if r.domains[host] {
		return true
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' && r.domains[host[i:]] {
			return true
		}
	}
	return false
}

// recipientCheck returns the QMTP recipient check for the configuration:
// nil (accept all) without rcpthosts; otherwise a check that lets relay
// clients through.
func (s *Server) recipientCheck() func(remoteIP, rcpt string) bool {
	if s.cfg.RcptHosts == nil {
		return nil
	}
	return func(remoteIP, rcpt string) bool {
		if s.cfg.RelayAll || s.cfg.RcptHosts.Allows(rcpt) {
			return true
		}
		ip, err := netip.ParseAddr(remoteIP)
		if err != nil {
			return false
		}
		return inPrefixes(s.cfg.Relay, ip.Unmap())
	}
}

func inPrefixes(list []netip.Prefix, ip netip.Addr) bool {
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
