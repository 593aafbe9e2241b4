package serverloop

import (
	"net/netip"
	"testing"
)

// The access list (moved here from commands/serve with the check itself).
func TestAllowed(t *testing.T) {
	for ip, want := range map[string]bool{"127.0.0.1": true, "127.3.4.5": true, "::1": true, "::ffff:127.0.0.1": true,
		"10.0.0.1": false, "2001:db8::1": false} {
		if got := Allowed(nil, netip.MustParseAddr(ip)); got != want {
			t.Errorf("default list: Allowed(%s) = %v", ip, got)
		}
	}
	if Allowed(nil, netip.Addr{}) {
		t.Error("an unknown address is allowed")
	}
	list := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	for ip, want := range map[string]bool{"127.0.0.1": true, "127.0.0.2": false, "::1": false, "10.9.9.9": true, "::ffff:10.0.0.1": true} {
		if got := Allowed(list, netip.MustParseAddr(ip)); got != want {
			t.Errorf("--allow list: Allowed(%s) = %v", ip, got)
		}
	}
}
