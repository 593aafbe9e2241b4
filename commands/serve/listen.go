package serve

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"qbox/proto"
	"qbox/proto/server"
)

// listenConfig is the mail listeners': no TCP keep-alive. Go's default
// turns it on for every accepted connection, four setsockopt calls each,
// a third of a QMQP session's system calls; it would only notice a dead
// peer after minutes, and every session is bounded already by its idle
// timeout per read and write (--timeout) and its session limit
// (--session-limit).
var listenConfig = net.ListenConfig{KeepAlive: -1}

// Listen opens a listener for each non-empty address.
func Listen(qmqpAddr, qmtpAddr, smtpAddr string) ([]Listener, error) {
	var ls []Listener
	for _, a := range []struct{ proto, addr string }{{QMQP, qmqpAddr}, {QMTP, qmtpAddr}, {SMTP, smtpAddr}} {
		if a.addr == "" {
			continue
		}
		l, err := listenConfig.Listen(context.Background(), "tcp", a.addr)
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("%s: %w", a.proto, err)
		}
		ls = append(ls, Listener{Protocol: a.proto, Listener: l})
	}
	return ls, nil
}

// ActivationListeners returns the sockets systemd passed (socket
// activation: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; fds from 3 on), or
// nil if there are none for this process. A socket named "qmqp", "qmtp" or
// "smtp" speaks that protocol; an unnamed one is known by its port (628,
// 209 or 25).
// The variables are removed from the environment, so a queue program
// started later does not take the sockets for its own.
func ActivationListeners(getenv func(string) string, unsetenv func(string) error) ([]Listener, error) {
	pid, fds := getenv("LISTEN_PID"), getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	names := getenv("LISTEN_FDNAMES")
	if unsetenv != nil {
		unsetenv("LISTEN_PID")
		unsetenv("LISTEN_FDS")
		unsetenv("LISTEN_FDNAMES")
	}
	if pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("socket activation: bad LISTEN_FDS=%q", fds)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	var ls []Listener
	fail := func(err error) ([]Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	for i := range n {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		l, err := net.FileListener(f)
		f.Close() // FileListener made its own copy
		if err != nil {
			return fail(fmt.Errorf("fd %d is not a listening socket: %v", fd, err))
		}
		name := ""
		if i < len(nameList) {
			name = nameList[i]
		}
		protocol, err := activationProtocol(name, l.Addr())
		if err != nil {
			l.Close()
			return fail(fmt.Errorf("fd %d: %v", fd, err))
		}
		ls = append(ls, Listener{Protocol: protocol, Listener: l})
	}
	return ls, nil
}

func activationProtocol(name string, addr net.Addr) (string, error) {
	switch strings.ToLower(name) {
	case QMQP, QMTP, SMTP:
		return strings.ToLower(name), nil
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		switch ap.Port() {
		case 628:
			return QMQP, nil
		case 209:
			return QMTP, nil
		case 25:
			return SMTP, nil
		}
	}
	return "", fmt.Errorf("socket %s named %q: name it qmqp, qmtp or smtp (FileDescriptorName= in the .socket unit)", addr, name)
}

// ServeStdio serves one connection on stdin/stdout in protocol (QMQP,
// QMTP or SMTP), with the same access list and limits as the listeners.
func (s *Server) ServeStdio(ctx context.Context, protocol string, stdin, stdout *os.File, getenv func(string) string) error {
	var srv interface {
		HandleConn(context.Context, server.Conn, proto.Peer)
	}
	switch protocol {
	case QMQP:
		srv = s.qmqp
	case QMTP:
		srv = s.qmtp
	case SMTP:
		srv = s.smtp
	default:
		return fmt.Errorf("--stdio wants qmqp, qmtp or smtp, not %q", protocol)
	}
	c, err := server.NewStdioConn(stdin, stdout)
	if err != nil {
		return err
	}
	defer c.Close()
	peer := server.StdioPeer(getenv, c.RemoteAddr())
	if s.hostnameSet || peer.LocalHost == "" {
		peer.LocalHost = s.cfg.Hostname
	}
	srv.HandleConn(ctx, c, peer)
	return nil
}
