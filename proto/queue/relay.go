package queue

import (
	"context"
	"errors"
	"io"

	"qbox/proto"
	"qbox/proto/relay"
)

// RecipientSender is a QMQPSender that answers for each recipient: the
// relay list (proto/relay), whose QMTP and SMTP relays may take some
// recipients of a message and refuse others. The QMQP transport gives
// each recipient its own reply when its client is one.
type RecipientSender interface {
	SendEach(ctx context.Context, env proto.Envelope, size int64, open func() (io.ReadCloser, error)) (relay.Outcome, error)
}

var _ RecipientSender = (*relay.Client)(nil)

// sendEach is QMQP.Deliver's step for a RecipientSender: the results of
// package i, and whether no relay could be reached.
func (t *QMQP) sendEach(ctx context.Context, rs RecipientSender, i int, p *proto.Message, st *Stats, onResult func(proto.Result)) (unreachable error) {
	env := proto.Envelope{Sender: p.Sender, Recipients: p.Recipients}
	o, err := rs.SendEach(ctx, env, p.Size, p.Open)
	var ce *proto.ConnectError
	if errors.As(err, &ce) || err != nil {
		for j := range p.Recipients {
			onResult(proto.Result{Message: i, Recipient: j, Reply: proto.Z(err.Error()), Protocol: "QMQP"})
		}
		if errors.As(err, &ce) {
			return err
		}
		return nil
	}
	st.Sessions++
	st.BytesOut += t.WireSize(p)
	replied := false
	for j := range p.Recipients {
		if o.FromServer[j] {
			replied = true
		}
		onResult(proto.Result{Message: i, Recipient: j, Reply: o.Replies[j], FromServer: o.FromServer[j], Server: o.Relay, Protocol: "QMQP"})
	}
	if replied {
		st.Replies++
	}
	return nil
}
