package inject

import (
	"errors"
	"time"

	"github.com/urfave/cli/v2"

	"qbox/proto"
	"qbox/proto/qmail/control"
	"qbox/proto/relay"
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

// servers is control.Relays as inject takes it: the --server flags
// first, a bad entry anywhere an error, none at all ErrNoServers. The
// relays come back as their URLs.
func servers(flags []string, getenv func(string) string) ([]string, error) {
	list, err := control.Relays(flags, getenv, control.FileStrict)
	if errors.Is(err, control.ErrNoServers) {
		return nil, ErrNoServers
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, len(list))
	for i, r := range list {
		out[i] = r.String()
	}
	return out, nil
}

// relayClient is the relay list client for servers (URLs or bare QMQP
// servers), with the netrc at $QMAILHOME/control/netrc.
func relayClient(servers []string, connectTimeout, timeout time.Duration, tlsOpts relay.TLSOptions, getenv func(string) string) (*relay.Client, error) {
	c := &relay.Client{Netrc: control.NetrcPath(getenv), ConnectTimeout: connectTimeout, Timeout: timeout, TLS: tlsOpts}
	for _, s := range servers {
		r, err := relay.Parse(s)
		if err != nil {
			return nil, err
		}
		c.Relays = append(c.Relays, r)
	}
	if helo, err := control.Helo(getenv); err == nil {
		c.Helo = helo
	}
	return c, nil
}

func tlsOptions(c *cli.Context) relay.TLSOptions {
	return relay.TLSOptions{CAFile: c.String("tls-ca"), ClientCert: c.String("tls-client-cert"), ClientKey: c.String("tls-client-key")}
}
