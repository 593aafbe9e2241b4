package control

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"qbox/proto/relay"
)

// RelaysFile is the control file listing the relays as URLs.
const RelaysFile = "relays"

// NetrcFile is the control file with the relays' passwords.
const NetrcFile = "netrc"

// RelaysPath is $QMAILHOME/control/relays.
func RelaysPath(getenv func(string) string) string { return Path(getenv, RelaysFile) }

// NetrcPath is $QMAILHOME/control/netrc.
func NetrcPath(getenv func(string) string) string { return Path(getenv, NetrcFile) }

// Relays returns the one failover list every sender uses (sendmail,
// qmail-inject, qbox inject, the queue runners), in order: the flags
// (each comma or space separated), else $QBOX_RELAYS, else the lines of
// $QMAILHOME/control/relays, else the QMQP servers as QMQPServers finds
// them ($QMQPSERVERS, control/qmqpservers, read by rule). Every entry is a
// relay URL (qmqp://, qmqps://, qmtp://, qmtps://, smtp://, smtps://) or a
// bare host[:port], which is QMQP; a bad entry is an error wherever it
// is. None anywhere is ErrNoServers.
func Relays(flags []string, getenv func(string) string, rule FileRule) ([]relay.Relay, error) {
	var list []string
	for _, s := range flags {
		list = append(list, splitServers(s)...)
	}
	from := ""
	if len(list) == 0 {
		list = splitServers(getenv("QBOX_RELAYS"))
		from = "$QBOX_RELAYS: "
	}
	if len(list) == 0 {
		path := RelaysPath(getenv)
		b, err := Read(path, MaxServersFile)
		switch {
		case err == nil:
			list, from = Lines(b), path+": "
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if len(list) == 0 {
		servers, err := QMQPServers(nil, getenv, rule)
		if err != nil {
			return nil, err
		}
		list, from = servers, ""
	}
	out := make([]relay.Relay, 0, len(list))
	for _, s := range list {
		r, err := relay.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s%w", from, err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, ErrNoServers
	}
	return out, nil
}

// RelayStrings is the relays as their URLs, for messages.
func RelayStrings(rs []relay.Relay) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}
