package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"qbox/proto"
)

// Listen opens a listener for each non-empty address.
func Listen(qmqpAddr, qmtpAddr, smtpAddr string) ([]Listener, error) {
	var ls []Listener
	for _, a := range []struct{ proto, addr string }{{QMQP, qmqpAddr}, {QMTP, qmtpAddr}, {SMTP, smtpAddr}} {
		if a.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", a.addr)
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

// StdioPeer describes the client of a connection handed over on stdin, as
// tcpserver or inetd do: TCPREMOTEIP, TCPREMOTEHOST and TCPLOCALHOST come
// from tcpserver; without them the peer is read from the socket itself.
func StdioPeer(getenv func(string) string, remote net.Addr) proto.Peer {
	p := proto.Peer{
		RemoteIP:   getenv("TCPREMOTEIP"),
		RemoteHost: getenv("TCPREMOTEHOST"),
		LocalHost:  getenv("TCPLOCALHOST"),
	}
	if p.RemoteIP == "" && remote != nil {
		if ip := remoteIP(remote); ip.IsValid() {
			p.RemoteIP = ip.String()
		}
	}
	return p
}

// stdioConn is a session's connection made of stdin and stdout.
type stdioConn struct {
	in     readDeadliner
	out    writeDeadliner
	remote net.Addr
	closer []func() error
}

type readDeadliner interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}

type writeDeadliner interface {
	Write([]byte) (int, error)
	SetWriteDeadline(time.Time) error
}

func (c *stdioConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *stdioConn) SetReadDeadline(t time.Time) error  { return c.in.SetReadDeadline(t) }
func (c *stdioConn) SetWriteDeadline(t time.Time) error { return c.out.SetWriteDeadline(t) }
func (c *stdioConn) Close() error {
	for _, f := range c.closer {
		f()
	}
	return nil
}

// CloseWrite half-closes the output side when it is a socket.
func (c *stdioConn) CloseWrite() error {
	if cw, ok := c.out.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// StdioConn makes a connection of stdin and stdout. A socket (tcpserver,
// inetd) becomes a net.Conn, which knows its peer; a pipe is switched to
// non-blocking mode so the idle timeout works on it too.
func StdioConn(stdin, stdout *os.File) (*stdioConn, error) {
	c := &stdioConn{}
	if isSocket(stdin) {
		nc, err := net.FileConn(stdin)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		c.in, c.remote = nc, nc.RemoteAddr()
		c.closer = append(c.closer, nc.Close)
	} else {
		f, err := pollable(stdin)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		c.in = f
	}
	if isSocket(stdout) {
		nc, err := net.FileConn(stdout)
		if err != nil {
			return nil, fmt.Errorf("stdout: %w", err)
		}
		c.out = nc
		c.closer = append(c.closer, nc.Close)
	} else {
		f, err := pollable(stdout)
		if err != nil {
			return nil, fmt.Errorf("stdout: %w", err)
		}
		c.out = f
	}
	return c, nil
}

func isSocket(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// pollable returns f as a non-blocking *os.File, which supports deadlines
// (pipes and FIFOs; a terminal or regular file simply has none).
func pollable(f *os.File) (*os.File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode()&(os.ModeNamedPipe) == 0 {
		return f, nil
	}
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// ServeStdio serves one connection on stdin/stdout in protocol (QMQP,
// QMTP or SMTP), with the same access list and limits as the listeners.
func (s *Server) ServeStdio(ctx context.Context, protocol string, stdin, stdout *os.File, getenv func(string) string) error {
	if protocol != QMQP && protocol != QMTP && protocol != SMTP {
		return fmt.Errorf("--stdio wants qmqp, qmtp or smtp, not %q", protocol)
	}
	c, err := StdioConn(stdin, stdout)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	peer := StdioPeer(getenv, c.remote)
	if s.hostnameSet || peer.LocalHost == "" {
		peer.LocalHost = s.cfg.Hostname
	}
	// A local pipe (no client address at all) is a local user; any
	// address known goes through the access list.
	if peer.RemoteIP != "" {
		ip, err := netip.ParseAddr(peer.RemoteIP)
		if err != nil || !s.allowed(protocol, ip) {
			s.refuse(protocol, c, peer.RemoteIP, start)
			return nil
		}
	}
	s.session(ctx, protocol, c, peer, start)
	return nil
}
