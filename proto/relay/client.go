package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/qmtp"
	"qbox/proto/smtp"
)

// MaxCAFile bounds a CA bundle read for verification.
const MaxCAFile = 4 << 20

// TLSOptions are the TLS settings every relay of a Client shares; a
// relay's own ?ca= overrides CAFile.
type TLSOptions struct {
	CAFile     string // PEM bundle; "": the system roots
	ClientCert string // PEM certificate chain to show the server
	ClientKey  string // its key
	// Roots, when set, is the pool to verify against (tests); CAFile
	// and a relay's ?ca= still take precedence.
	Roots *x509.CertPool
}

// Client sends each message through the first relay of Relays that can
// be reached. The next relay is tried only when the connection to this
// one could not be made (TCP, or the TLS handshake of an implicit-TLS
// relay, or its credentials are missing): once a byte of the mail was
// sent, the outcome is final for this attempt, as qmail-qmqpc's rule.
type Client struct {
	Relays []Relay
	// Netrc is the netrc file with the SMTP passwords (LoadNetrc's
	// checks apply); "" means none.
	Netrc          string
	ConnectTimeout time.Duration // per relay; 0: 10s
	// Timeout bounds each reply (and each write); 0: 60s for QMQP, the
	// protocol clients' defaults otherwise.
	Timeout time.Duration
	Helo    string // SMTP EHLO name; "" the host name
	TLS     TLSOptions
	Dial    proto.DialFunc // tests
}

// Outcome is what became of one message.
type Outcome struct {
	// Replies has one reply per recipient, in order.
	Replies []proto.Reply
	// FromServer says for each recipient whether a server sent the
	// reply (false: made up here because the session failed).
	FromServer []bool
	Relay      string // the relay that carried it
	// PerRecipient says the relay answered each recipient on its own
	// (QMTP, SMTP); QMQP answers the whole message once.
	PerRecipient bool
}

// Reply folds the replies into one: K when all are K; otherwise the
// first D when there is no Z, else the first Z. (A caller that can keep
// some recipients and not others uses Replies.)
func (o Outcome) Reply() proto.Reply {
	var firstZ, firstD *proto.Reply
	for i := range o.Replies {
		switch o.Replies[i].Status {
		case proto.Temporary:
			if firstZ == nil {
				firstZ = &o.Replies[i]
			}
		case proto.Permanent:
			if firstD == nil {
				firstD = &o.Replies[i]
			}
		}
	}
	switch {
	case firstZ != nil:
		return *firstZ
	case firstD != nil:
		return *firstD
	case len(o.Replies) > 0:
		return o.Replies[0]
	}
	return proto.Z("no reply")
}

// Split is what the replies of one Outcome leave to do: the recipients
// the relay took (K) and the rest, which a caller keeps (queues) so a
// retry never sends the message twice to one who has it.
type Split struct {
	Taken []string // recipients with a K, in order
	Left  []string // the others, in order
	// Refused: every recipient got a D (none K, none Z): a permanent
	// failure of the whole message.
	Refused bool
	// Err is nil when every recipient got K; otherwise why Left were
	// not taken (the folded Z or D), saying how many were taken when
	// some were.
	Err error
}

// Split matches the replies to rcpts (the envelope's recipients). When
// they do not match one to one, which a Client never returns, no K is
// assumed: every recipient is left.
func (o Outcome) Split(rcpts []string) Split {
	var s Split
	if len(o.Replies) != len(rcpts) {
		s.Left = rcpts
		s.Err = proto.Z(fmt.Sprintf("%d replies for %d recipients", len(o.Replies), len(rcpts))).Err()
		return s
	}
	s.Refused = len(rcpts) > 0
	for i, r := range o.Replies {
		if r.Status == proto.OK {
			s.Taken = append(s.Taken, rcpts[i])
			s.Refused = false
			continue
		}
		s.Left = append(s.Left, rcpts[i])
		s.Refused = s.Refused && r.Status == proto.Permanent
	}
	if len(s.Left) == 0 {
		return s
	}
	s.Err = o.Reply().Err()
	if len(s.Taken) > 0 {
		s.Err = fmt.Errorf("taken for %d of %d recipients, not yet for the rest: %w", len(s.Taken), len(rcpts), s.Err)
	}
	return s
}

// Send delivers one message of size bytes read from msg (the
// queue.QMQPSender contract): nil error only for K; a Z or D comes back
// as a *proto.Error beside the reply; a *proto.ConnectError means no relay
// could be reached and nothing was sent. A message for an SMTP relay is
// read twice (its size and 8-bit scan go into MAIL): unless msg can seek,
// it is first copied to an unlinked temporary file.
func (c *Client) Send(ctx context.Context, env proto.Envelope, msg io.Reader, size int64) (proto.Reply, error) {
	open, cleanup, err := reopenable(msg, c.needsTwice())
	if err != nil {
		return proto.Reply{}, err
	}
	defer cleanup()
	o, err := c.SendEach(ctx, env, size, open)
	if err != nil {
		return proto.Reply{}, err
	}
	r := o.Reply()
	return r, r.Err()
}

func (c *Client) needsTwice() bool {
	for _, r := range c.Relays {
		if r.Protocol == SMTP {
			return true
		}
	}
	return false
}

// SendEach delivers one message, read through open (called once or,
// for SMTP, twice), and returns a reply per recipient. The error is a
// *proto.ConnectError when no relay could be reached (nothing sent, no
// reply), naming every relay tried and why.
func (c *Client) SendEach(ctx context.Context, env proto.Envelope, size int64, open func() (io.ReadCloser, error)) (Outcome, error) {
	if len(env.Recipients) == 0 {
		return Outcome{}, errors.New("relay: a message without recipients")
	}
	cerr := &proto.ConnectError{Protocol: "relay"}
	var netrc *Netrc
	var netrcErr error
	netrcLoaded := false
	for _, r := range c.Relays {
		var auth *smtp.Auth
		if r.Protocol == SMTP && r.TLS != TLSNone {
			if !netrcLoaded {
				netrc, netrcErr = c.loadNetrc()
				netrcLoaded = true
			}
			var err error
			if auth, err = credentials(r, netrc, netrcErr, c.Netrc); err != nil {
				cerr.Tried = append(cerr.Tried, proto.ConnectAttempt{Addr: r.Addr(), Name: r.String(), Err: err})
				continue
			}
		}
		conn, err := c.connect(ctx, r)
		if err != nil {
			cerr.Tried = append(cerr.Tried, proto.ConnectAttempt{Addr: r.Addr(), Name: r.String(), Err: err})
			if ctx.Err() != nil {
				break
			}
			continue
		}
		o := c.session(ctx, conn, r, auth, env, size, open)
		conn.Close()
		o.Relay = r.String()
		o.PerRecipient = r.Protocol != QMQP
		return o, nil
	}
	if len(c.Relays) == 0 {
		return Outcome{}, &proto.ConnectError{Protocol: "relay"}
	}
	return Outcome{}, cerr
}

func (c *Client) loadNetrc() (*Netrc, error) {
	if c.Netrc == "" {
		return nil, os.ErrNotExist
	}
	return LoadNetrc(c.Netrc)
}

// credentials finds the AUTH account for an SMTP relay: its user's
// password from the netrc; with no user in the URL, the netrc entry for
// the relay's host, if any (no netrc, no entry: no AUTH).
func credentials(r Relay, n *Netrc, nerr error, path string) (*smtp.Auth, error) {
	if nerr != nil {
		if r.User == "" && errors.Is(nerr, os.ErrNotExist) {
			return nil, nil
		}
		if errors.Is(nerr, os.ErrNotExist) {
			return nil, fmt.Errorf("no password for %s: netrc file %s does not exist", r.User, orNone(path))
		}
		return nil, fmt.Errorf("no password for %s: %v", orUser(r.User), nerr)
	}
	e, ok := n.Find(r.Host, r.User)
	switch {
	case !ok && r.User == "":
		return nil, nil
	case !ok:
		return nil, fmt.Errorf("no password for %s at %s in %s", r.User, r.Host, path)
	case e.Machine == "" && r.User == "":
		return nil, nil // a default entry does not make a relay without a user authenticate
	}
	user := r.User
	if user == "" {
		user = e.Login
	}
	if user == "" || e.Password == "" {
		return nil, fmt.Errorf("the entry for %s in %s has no login or no password", r.Host, path)
	}
	return &smtp.Auth{User: user, Password: e.Password}, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none configured)"
	}
	return s
}

func orUser(s string) string {
	if s == "" {
		return "the relay"
	}
	return s
}

// TLSConfig is the configuration a TLS connection to r uses: TLS 1.2 or
// newer, the certificate verified for r's host against the system roots,
// or the relay's ?ca= bundle, or the client's CA file; the client
// certificate when one is set.
func (c *Client) TLSConfig(r Relay) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.Host, RootCAs: c.TLS.Roots}
	ca := r.CAFile
	if ca == "" {
		ca = c.TLS.CAFile
	}
	if ca != "" {
		pool, err := LoadCAFile(ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.TLS.ClientCert != "" || c.TLS.ClientKey != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.ClientCert, c.TLS.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// LoadCAFile reads a PEM bundle of CA certificates (at most MaxCAFile
// bytes) into a pool.
func LoadCAFile(path string) (*x509.CertPool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxCAFile+1))
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", path, err)
	}
	if len(b) > MaxCAFile {
		return nil, fmt.Errorf("CA file %s: larger than %d bytes", path, MaxCAFile)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// connect dials r and, for an implicit-TLS relay, completes the handshake
// with the certificate verified.
func (c *Client) connect(ctx context.Context, r Relay) (net.Conn, error) {
	var cfg *tls.Config
	if r.TLS != TLSNone {
		var err error
		if cfg, err = c.TLSConfig(r); err != nil {
			return nil, err
		}
	}
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := proto.Dialer{Dial: c.Dial, Timeout: timeout, Protocol: strings.ToLower(string(r.Protocol))}
	conn, _, err := d.DialFirst(ctx, []string{r.Addr()}, nil)
	if err != nil {
		var ce *proto.ConnectError
		if errors.As(err, &ce) && len(ce.Tried) == 1 {
			return nil, ce.Tried[0].Err
		}
		return nil, err
	}
	if r.TLS != TLSImplicit {
		return conn, nil
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS: %v", err)
	}
	return tc, nil
}

// session sends the message over conn in r's protocol.
func (c *Client) session(ctx context.Context, conn net.Conn, r Relay, auth *smtp.Auth, env proto.Envelope, size int64, open func() (io.ReadCloser, error)) Outcome {
	n := len(env.Recipients)
	o := Outcome{Replies: make([]proto.Reply, n), FromServer: make([]bool, n)}
	all := func(rep proto.Reply, fromServer bool) {
		for i := range o.Replies {
			o.Replies[i], o.FromServer[i] = rep, fromServer
		}
	}
	switch r.Protocol {
	case QMQP:
		rc, err := open()
		if err != nil {
			all(proto.Z("reading the message: "+err.Error()), false)
			return o
		}
		defer rc.Close()
		reply, err := qmqp.ExchangeContext(ctx, conn, env, rc, size, c.Timeout)
		if err != nil {
			all(proto.Z(fmt.Sprintf("%s: %v", r, err)), false)
			return o
		}
		all(reply, true)
	case QMTP:
		qc := qmtp.Client{ReadTimeout: c.Timeout, WriteTimeout: c.Timeout}
		pkg := proto.Message{Sender: env.Sender, Recipients: env.Recipients, Size: size, Open: open}
		all(proto.Z(r.String()+": no reply"), false)
		qc.Send(ctx, conn, []proto.Message{pkg}, func(res proto.Result) {
			o.Replies[res.Recipient], o.FromServer[res.Recipient] = res.Reply, res.FromServer
		})
	case SMTP:
		sc := smtp.Client{Helo: c.Helo, CommandTimeout: c.Timeout, Auth: auth, TLS: smtp.TLSNone}
		if r.TLS == TLSStart {
			cfg, err := c.TLSConfig(r)
			if err != nil {
				all(proto.Z(err.Error()), false)
				return o
			}
			sc.TLS, sc.TLSConfig = smtp.TLSRequire, cfg
		}
		msg := proto.Message{Sender: env.Sender, Recipients: env.Recipients, Size: size, Open: open}
		all(proto.Z(r.String()+": no reply"), false)
		sc.Send(ctx, conn, r.Host, []proto.Message{msg}, func(res proto.Result) {
			o.Replies[res.Recipient], o.FromServer[res.Recipient] = res.Reply, res.FromServer
		})
	}
	return o
}

// reopenable turns a one-shot reader into an opener: a seeker is rewound,
// and when twice is false a plain reader is handed out once; otherwise it
// is copied to an unlinked temporary file first.
func reopenable(msg io.Reader, twice bool) (func() (io.ReadCloser, error), func(), error) {
	if s, ok := msg.(io.ReadSeeker); ok {
		start, err := s.Seek(0, io.SeekCurrent)
		if err == nil {
			return func() (io.ReadCloser, error) {
				if _, err := s.Seek(start, io.SeekStart); err != nil {
					return nil, err
				}
				return io.NopCloser(s), nil
			}, func() {}, nil
		}
	}
	if !twice {
		used := false
		return func() (io.ReadCloser, error) {
			if used {
				return nil, errors.New("relay: the message can be read only once")
			}
			used = true
			return io.NopCloser(msg), nil
		}, func() {}, nil
	}
	f, err := os.CreateTemp("", "qbox-relay-")
	if err != nil {
		return nil, nil, fmt.Errorf("relay: a temporary copy of the message: %w", err)
	}
	os.Remove(f.Name())
	if _, err := io.Copy(f, msg); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("relay: a temporary copy of the message: %w", err)
	}
	return func() (io.ReadCloser, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return io.NopCloser(f), nil
	}, func() { f.Close() }, nil
}
