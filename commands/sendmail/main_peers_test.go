//go:build peers

package sendmail

import (
	"testing"

	"qbox/proto/testkit/testpeer"
)

// TestMain stops this process's private Postfix once the tests are done.
func TestMain(m *testing.M) { testpeer.Main(m) }
