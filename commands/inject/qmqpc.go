package inject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"qbox/commands/exitcode"
	"qbox/proto/qmail/control"
	"qbox/proto/qmqp"
	"qbox/proto/store/qmailqueue"
)

// QmqpcMain is qbox run as qmail-qmqpc: the qmail-queue interface (message
// on fd 0, envelope on fd 1) forwarded over QMQP to the servers in
// $QMQPSERVERS, else $QMAILHOME/control/qmqpservers (the same order as
// inject and sendmail), so it can stand in as mini-qmail's
// bin/qmail-queue or be named by $QMAILQUEUE. It exits with qmail-queue
// codes: 0 accepted, 31 D, 71 Z, 72 the last connection timed out, 73 it
// was refused, 74 communication failed after connecting, 91 malformed
// envelope, 54 read error, 55 no usable server configured (exitcode.QmailQueue,
// applied by the caller).
func QmqpcMain(args []string) error {
	return Qmqpc(context.Background(), os.Stdin, os.NewFile(1, "envelope"), os.Getenv)
}

// Qmqpc is the personality's core. The message is read completely (or, a
// regular file, just measured) before the envelope: a caller such as
// qmail-inject writes the envelope only after closing the message pipe.
// The message bytes are sent untouched.
func Qmqpc(ctx context.Context, msg, envelope io.Reader, getenv func(string) string) error {
	// $QMQPSERVERS (set for this run: a bad entry is an error), else
	// control/qmqpservers as qmail-qmqpc reads it (a missing file is an
	// error, a line that is no server skipped).
	servers, err := control.QMQPServers(nil, getenv, control.FileAsQmail)
	if err != nil {
		return exitcode.Configuration(err)
	}

	src, err := OpenSource(msg, 0)
	if err != nil {
		return exitcode.Input(err)
	}
	defer src.Close()
	env, err := qmailqueue.ReadEnvelope(envelope, 0)
	if err != nil {
		var ee *qmailqueue.EnvelopeError
		if errors.As(err, &ee) {
			return err
		}
		return exitcode.Input(fmt.Errorf("reading the envelope: %w", err))
	}
	body, err := src.At(0)
	if err != nil {
		return exitcode.Input(err)
	}
	client := &qmqp.Client{Servers: servers, ConnectTimeout: DefaultConnectTimeout, Timeout: DefaultTimeout}
	// nil for K; a D or Z reply, a connect error, or a session that
	// failed after connecting.
	_, err = client.Send(ctx, env, body, src.Size())
	return err
}
