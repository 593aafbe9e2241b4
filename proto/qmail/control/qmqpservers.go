package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"qbox/proto"
)

// QMQPServersFile is the control file listing the QMQP servers.
const QMQPServersFile = "qmqpservers"

// MaxServersFile bounds the qmqpservers control file read: thousands of
// servers; a larger file is refused, not read into memory.
const MaxServersFile = 1 << 20

// ErrNoServers means no QMQP server is configured: no flag, no
// $QMQPSERVERS and no server in control/qmqpservers. It unwraps to
// proto.ErrNoServers (a configuration fault).
var ErrNoServers error = &noServersError{}

type noServersError struct{}

func (*noServersError) Error() string {
	return "no QMQP server configured: set $QMQPSERVERS or list the servers in $QMAILHOME/control/qmqpservers"
}
func (*noServersError) Unwrap() error { return proto.ErrNoServers }

// FileRule is how QMQPServers takes control/qmqpservers.
type FileRule int

const (
	// FileStrict (qbox inject, sendmail, flush's bounces): a missing
	// file is no server (ErrNoServers); a line that is no server is an
	// error.
	FileStrict FileRule = iota
	// FileAsQmail (qmail-qmqpc, standing in as qmail-queue): a missing
	// file is an error, as qmail-qmqpc's; a line that is no server is
	// skipped (qmail skips what is not an IPv4 address), and no usable
	// line at all is an error.
	FileAsQmail
)

// QMQPServersPath is $QMAILHOME/control/qmqpservers.
func QMQPServersPath(getenv func(string) string) string {
	return Path(getenv, QMQPServersFile)
}

// QMQPServers returns the QMQP servers to try, in order: flags (each
// comma or space separated), else $QMQPSERVERS (comma or space
// separated), else the lines of $QMAILHOME/control/qmqpservers (default
// /var/qmail; blank lines and # comments skipped), read by rule. Each is
// host, host:port or [v6]:port. A flag or $QMQPSERVERS entry that is no
// server is an error, whatever the rule: it was set for this run.
func QMQPServers(flags []string, getenv func(string) string, rule FileRule) ([]string, error) {
	var servers []string
	for _, s := range flags {
		servers = append(servers, splitServers(s)...)
	}
	from := ""
	if len(servers) == 0 {
		servers = splitServers(getenv("QMQPSERVERS"))
		from = "$QMQPSERVERS: "
	}
	if len(servers) > 0 {
		for _, s := range servers {
			if err := CheckServer(s); err != nil {
				return nil, fmt.Errorf("%s%w", from, err)
			}
		}
		return servers, nil
	}
	path := QMQPServersPath(getenv)
	lines, err := readServersFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && rule == FileStrict:
		return nil, ErrNoServers
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	for _, s := range lines {
		err := CheckServer(s)
		switch {
		case err == nil:
			servers = append(servers, s)
		case rule == FileStrict:
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if len(servers) == 0 {
		if rule == FileAsQmail {
			return nil, fmt.Errorf("no usable QMQP server in %s", path)
		}
		return nil, ErrNoServers
	}
	return servers, nil
}

// readServersFile reads a qmqpservers control file: one server per line,
// surrounding white space, blank lines and lines starting with # ignored.
func readServersFile(path string) ([]string, error) {
	b, err := Read(path, MaxServersFile)
	if err != nil {
		return nil, err
	}
	return Lines(b), nil
}

func splitServers(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}

// CheckServer refuses what cannot be a server's address: an empty host,
// a bad port, an IPv6 literal without brackets but with a port.
func CheckServer(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: host alone, or a bracketed or bare IPv6 literal.
		h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if h == "" || strings.ContainsAny(h, "[]/ ") {
			return fmt.Errorf("bad QMQP server %q", s)
		}
		return nil
	}
	if host == "" || port == "" || strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("bad QMQP server %q: want HOST, HOST:PORT or [IPv6]:PORT", s)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("bad QMQP server %q: %v", s, err)
	}
	return nil
}
