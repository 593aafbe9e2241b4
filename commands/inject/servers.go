package inject

import (
	"errors"

	"qbox/proto"
	"qbox/proto/qmail/control"
)

// ErrNoServers means no QMQP server is configured anywhere. It is
// proto.ErrNoServers (a configuration fault) with the places to set one,
// --server among them.
var ErrNoServers error = &noServersError{}

type noServersError struct{}

func (*noServersError) Error() string {
	return "no QMQP server configured: use --server, $QMQPSERVERS or $QMAILHOME/control/qmqpservers"
}
func (*noServersError) Unwrap() error { return proto.ErrNoServers }

// servers is control.QMQPServers as inject takes it: the --server flags
// first, a bad entry anywhere an error, none at all ErrNoServers.
func servers(flags []string, getenv func(string) string) ([]string, error) {
	list, err := control.QMQPServers(flags, getenv, control.FileStrict)
	if errors.Is(err, control.ErrNoServers) {
		return nil, ErrNoServers
	}
	return list, err
}
