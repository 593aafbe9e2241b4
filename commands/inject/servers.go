package inject

import (
	"fmt"
	"net"
	"os"
	"strings"

	"qbox/proto"
	"qbox/proto/qmail/control"
)

// ErrNoServers means no QMQP server is configured anywhere. It is
// proto.ErrNoServers (a configuration fault) with the places to set one.
var ErrNoServers error = &noServersError{}

type noServersError struct{}

func (*noServersError) Error() string {
	return "no QMQP server configured: use --server, $QMQPSERVERS or $QMAILHOME/control/qmqpservers"
}
func (*noServersError) Unwrap() error { return proto.ErrNoServers }

// Servers returns the QMQP servers to try, in order: the --server flags,
// else $QMQPSERVERS (comma or space separated), else the lines of
// $QMAILHOME/control/qmqpservers (default /var/qmail; blank lines and #
// comments skipped). Each is host, host:port or [v6]:port. None at all is
// ErrNoServers; an unreadable control file is an error of its own.
func Servers(flagServers []string, getenv func(string) string) ([]string, error) {
	var servers []string
	for _, s := range flagServers {
		servers = append(servers, splitList(s)...)
	}
	if len(servers) == 0 {
		servers = splitList(getenv("QMQPSERVERS"))
	}
	if len(servers) == 0 {
		path := ControlFile(getenv)
		list, err := ReadServersFile(path)
		if err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		servers = list
	}
	if len(servers) == 0 {
		return nil, ErrNoServers
	}
	for _, s := range servers {
		if err := checkServer(s); err != nil {
			return nil, err
		}
	}
	return servers, nil
}

// ControlFile is $QMAILHOME/control/qmqpservers.
func ControlFile(getenv func(string) string) string {
	return control.Path(getenv, "qmqpservers")
}

// MaxServersFile bounds the qmqpservers control file read: thousands of
// servers; a larger file is refused, not read into memory.
const MaxServersFile = 1 << 20

// ReadServersFile reads a qmqpservers control file: one server per line,
// surrounding white space, blank lines and lines starting with # ignored.
func ReadServersFile(path string) ([]string, error) {
	b, err := control.Read(path, MaxServersFile)
	if err != nil {
		return nil, err
	}
	return control.Lines(b), nil
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}

// checkServer refuses what cannot be an address: an empty host, a bad
// port, an IPv6 literal without brackets but with a port.
func checkServer(s string) error {
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
