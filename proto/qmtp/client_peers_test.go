//go:build peers

package qmtp

import (
	"context"
	"fmt"
	"testing"

	"qbox/proto"
	"qbox/proto/testkit/testpeer"
)

func TestClientMailfront(t *testing.T) {
	addr := testpeer.Mailfront(t, "qmtp")
	var pkgs []proto.Message
	for i := 0; i < 20; i++ {
		pkgs = append(pkgs, bytesPackage("sender@example.test", []byte(fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i)), fmt.Sprintf("rcpt%d@example.test", i)))
	}
	var results []proto.Result
	if _, err := (&Client{}).Deliver(context.Background(), []string{addr}, pkgs, collect(&results)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, pkgs, results)
	for _, r := range results {
		if r.Reply.Status != proto.OK || !r.FromServer {
			t.Fatalf("mailfront: %v", r.Reply)
		}
	}
}
