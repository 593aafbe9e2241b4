//go:build peers

package qmqp_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/testpeer"
)

// Real peers: Postfix's qmqp-sink and qmqpd answer the client.
func TestClientAgainstPostfix(t *testing.T) {
	sink := testpeer.QmqpSink(t)
	reply, err := clientSend(&qmqp.Client{Servers: []string{sink}}, "Subject: sink\n\nbody\n")
	if err != nil || reply.Status != proto.OK {
		t.Fatalf("qmqp-sink: %v %v", reply, err)
	}
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	msg := "Subject: " + token + "\n\nbody " + token + "\n"
	env := proto.Envelope{Sender: "s@" + pf.Domain, Recipients: []string{"client@" + pf.Domain}}
	reply, err = (&qmqp.Client{Servers: []string{pf.QMQPAddr}}).Send(context.Background(), env, strings.NewReader(msg), int64(len(msg)))
	if err != nil || reply.Status != proto.OK || !strings.HasPrefix(reply.Text, "Ok: queued as ") {
		t.Fatalf("qmqpd: %v %v", reply, err)
	}
	got := pf.WaitFor(t, token, 1, 30*time.Second)[0]
	if !bytes.Equal(testpeer.Body(got), []byte("body "+token+"\n")) {
		t.Fatalf("delivered body %q", testpeer.Body(got))
	}
	// qmqpd refuses zero recipients with D: the client returns the reply
	// and a permanent *proto.Error, never a nil error.
	reply, err = (&qmqp.Client{Servers: []string{pf.QMQPAddr}}).Send(context.Background(), proto.Envelope{Sender: "s@x"}, strings.NewReader(msg), int64(len(msg)))
	var refused *proto.Error
	if !errors.As(err, &refused) || refused.Temporary() || reply.Status != proto.Permanent {
		t.Fatalf("zero recipients: %v %v", reply, err)
	}
}
