package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"qbox/proto"
)

// StdioPeer describes the client of a connection handed over on stdin, as
// tcpserver or inetd do: TCPREMOTEIP, TCPREMOTEHOST and TCPLOCALHOST come
// from tcpserver; without them the peer is read from the socket itself
// (remote may be nil: a pipe, a local user). The RemoteIP of an IP socket
// whose peer could not be read is UnknownPeer, which no access list
// admits.
func StdioPeer(getenv func(string) string, remote net.Addr) proto.Peer {
	p := proto.Peer{
		RemoteIP:   getenv("TCPREMOTEIP"),
		RemoteHost: getenv("TCPREMOTEHOST"),
		LocalHost:  getenv("TCPLOCALHOST"),
	}
	if p.RemoteIP == "" && remote != nil {
		if _, unknown := remote.(unknownPeer); unknown {
			p.RemoteIP = UnknownPeer
		} else if ip := RemoteIP(remote); ip.IsValid() {
			p.RemoteIP = ip.String()
		}
	}
	return p
}

// UnknownPeer is the RemoteIP of a client on an IP socket whose address
// could not be read: one that reset the connection before the server
// asked (its bytes are still readable). It is not an address, so every
// access check refuses it; an empty RemoteIP would pass for a local pipe.
const UnknownPeer = "unknown"

// unknownPeer is the remote address of such a socket.
type unknownPeer struct{}

func (unknownPeer) Network() string { return "ip" }
func (unknownPeer) String() string  { return UnknownPeer }

// RemoteIP is a network address's IP (IPv4-mapped IPv6 unmapped), or the
// zero Addr when it has none (a unix socket, a pipe).
func RemoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// StdioConn is a session's connection made of stdin and stdout, for a
// server run by tcpserver or inetd (`serve --stdio`) or a local program
// speaking SMTP on a pipe (`sendmail -bs`). It satisfies Conn.
type StdioConn struct {
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

func (c *StdioConn) Read(p []byte) (int, error)         { return c.in.Read(p) }
func (c *StdioConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *StdioConn) SetReadDeadline(t time.Time) error  { return c.in.SetReadDeadline(t) }
func (c *StdioConn) SetWriteDeadline(t time.Time) error { return c.out.SetWriteDeadline(t) }

// RemoteAddr is the client's address when stdin is a socket, else nil.
func (c *StdioConn) RemoteAddr() net.Addr { return c.remote }

// Close releases the socket copies; stdin and stdout stay open.
func (c *StdioConn) Close() error {
	for _, f := range c.closer {
		f()
	}
	return nil
}

// CloseWrite half-closes the output side when it is a socket.
func (c *StdioConn) CloseWrite() error {
	if cw, ok := c.out.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NewStdioConn makes a connection of stdin and stdout. A socket
// (tcpserver, inetd) becomes a net.Conn, which knows its peer; a pipe is
// switched to non-blocking mode so that deadlines work on it too.
func NewStdioConn(stdin, stdout *os.File) (*StdioConn, error) {
	c := &StdioConn{}
	if isSocket(stdin) {
		nc, err := net.FileConn(stdin)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		c.in, c.remote = nc, nc.RemoteAddr()
		if c.remote == nil && isIPSocket(stdin) {
			c.remote = unknownPeer{}
		}
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

// isIPSocket reports whether f is an IPv4 or IPv6 socket (by its own
// address, which stays readable when the peer's is gone), or whether
// that cannot be told: a socket of unknown family is not a local one.
func isIPSocket(f *os.File) bool {
	sc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	ip := true
	sc.Control(func(fd uintptr) {
		sa, err := syscall.Getsockname(int(fd))
		if err != nil {
			return
		}
		switch sa.(type) {
		case *syscall.SockaddrInet4, *syscall.SockaddrInet6:
		default:
			ip = false
		}
	})
	return ip
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
