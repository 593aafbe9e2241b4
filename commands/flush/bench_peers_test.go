//go:build peers

package flush

import (
	"testing"

	"qbox/proto/testkit/testpeer"
)

// BenchmarkFlushLoopback10kMailfront is the same into mailfront's
// qmtpfront-echo, which stores nothing: what the client alone can do,
// next to the figure with a durable store behind the server.
func BenchmarkFlushLoopback10kMailfront(b *testing.B) {
	flush10k(b, testpeer.Mailfront(b, "qmtp"))
}
