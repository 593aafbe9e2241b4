package sendmail

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"qbox/commands/exitcode"
	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/message"
)

// SMTP limits for -bs. RFC 5321 sets 512 bytes for a command line and
// 1000 for a text line; text lines are allowed to be longer (MUAs send
// them), up to maxDataLine.
const (
	maxCommandLine   = 2048
	maxDataLine      = 1 << 20
	maxRecipients    = 1000
	defaultSizeLimit = 64 << 20
	maxBadCommands   = 20
)

// smtpSubmit hands one received message (LF line ends, as received) on;
// sendmail -bs wires it to header completion, QMQP and the spool.
type smtpSubmit func(ctx context.Context, env proto.Envelope, data *spill.Buffer) (code int, text string)

// smtpSession is one SMTP conversation on a reader and writer: sendmail
// -bs, where the "client" is a local program speaking SMTP on our
// stdin/stdout.
type smtpSession struct {
	r        *bufio.Reader
	w        *bufio.Writer
	hostname string
	maxSize  int64
	submit   smtpSubmit
	rewrite  func(string) string // completes a bare recipient
	stderr   io.Writer
	// Line limits; 0 means maxCommandLine and maxDataLine. The fuzz
	// target sets small ones, so that short inputs reach every path.
	commandLimit, textLimit int

	mailFrom   *string
	recipients []string
	bad        int
	// crlf reports that the last line read ended in CRLF, not a bare LF.
	crlf bool
}

func serveSMTP(ctx context.Context, p *Process) error {
	cfg, err := message.ConfigFromEnv(p.Getenv)
	if err != nil {
		return exitcode.Temp(fmt.Errorf("reading the qmail configuration: %w", err))
	}
	// The greeting and the HELO reply name it: from the environment, so
	// it must not end a reply line early.
	hostname := oneLine(cfg.DefaultHost)
	size := int64(defaultSizeLimit)
	if v, err := strconv.ParseInt(p.Getenv("QBOX_MAX_SIZE"), 10, 64); err == nil && v > 0 {
		size = v
	}
	s := &smtpSession{
		r:        bufio.NewReaderSize(p.Stdin, 64<<10),
		w:        bufio.NewWriter(p.Stdout),
		hostname: hostname,
		maxSize:  size,
		rewrite:  cfg.Rewrite,
		stderr:   p.Stderr,
		submit: func(ctx context.Context, env proto.Envelope, data *spill.Buffer) (int, string) {
			return submitSMTP(ctx, p, cfg, env, data)
		},
	}
	if err := s.run(ctx); err != nil {
		return exitcode.Input(fmt.Errorf("-bs: %w", err))
	}
	return nil
}

// submitSMTP completes the received message's header (Date, Message-ID,
// From when missing; Bcc removed) and sends it; the SMTP envelope is
// kept as given.
func submitSMTP(ctx context.Context, p *Process, cfg message.Config, env proto.Envelope, data *spill.Buffer) (int, string) {
	sender := env.Sender
	// A missing From names the envelope sender, as -f does.
	applySenderOptions(&cfg, &Options{Sender: sender, SenderSet: true})
	m, err := message.Prepare(data.Reader(), cfg, message.Options{Sender: &sender})
	if err != nil {
		return 554, "5.6.0 " + oneLine(err.Error())
	}
	var buf spill.Buffer
	defer buf.Close()
	if _, err := io.Copy(&buf, m.Reader()); err != nil {
		return 451, "4.3.0 " + oneLine(err.Error())
	}
	res := submit(ctx, p, env, &buf)
	switch res.kind {
	case sent:
		return 250, "2.0.0 Ok: sent over QMQP: " + oneLine(res.reply.Text)
	case rejected:
		return 554, "5.3.0 rejected: " + oneLine(res.reply.Text)
	case queued:
		p.note(false, "%s", res.queuedNote())
		return 250, "2.0.0 Ok: queued in the local spool; relay unavailable: " + oneLine(res.reason)
	default:
		return 451, "4.3.0 not sent and not queued: " + oneLine(res.reason)
	}
}

func (s *smtpSession) reply(code int, lines ...string) {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		s.w.WriteString(strconv.Itoa(code))
		s.w.WriteString(sep)
		s.w.WriteString(l)
		s.w.WriteString("\r\n")
	}
}

func (s *smtpSession) run(ctx context.Context) error {
	s.reply(220, s.hostname+" ESMTP qbox sendmail -bs")
	for {
		if err := s.w.Flush(); err != nil {
			return err
		}
		line, err := s.readLine(limit(s.commandLimit, maxCommandLine))
		if errors.Is(err, errLongLine) {
			s.reply(500, "5.5.2 line too long")
			if s.tooManyErrors() {
				return nil
			}
			continue
		}
		if err == io.EOF {
			return nil // the client went away: an open transaction is dropped
		}
		if err != nil {
			return err
		}
		verb, arg, _ := strings.Cut(string(line), " ")
		arg = strings.TrimSpace(arg)
		switch strings.ToUpper(verb) {
		case "HELO":
			if arg == "" {
				s.reply(501, "5.5.4 HELO needs a domain")
				continue
			}
			s.reset()
			s.reply(250, s.hostname)
		case "EHLO":
			if arg == "" {
				s.reply(501, "5.5.4 EHLO needs a domain")
				continue
			}
			s.reset()
			s.reply(250, s.hostname, "PIPELINING", "8BITMIME", "SIZE "+strconv.FormatInt(s.maxSize, 10), "ENHANCEDSTATUSCODES")
		case "MAIL":
			s.mail(arg)
		case "RCPT":
			s.rcpt(arg)
		case "DATA":
			if arg != "" {
				s.reply(501, "5.5.4 DATA takes no argument")
				continue
			}
			if err := s.data(ctx); err != nil {
				return err
			}
		case "RSET":
			s.reset()
			s.reply(250, "2.0.0 Ok")
		case "NOOP":
			s.reply(250, "2.0.0 Ok")
		case "QUIT":
			s.reply(221, "2.0.0 "+s.hostname+" closing")
			return s.w.Flush()
		case "VRFY":
			s.reply(252, "2.1.5 cannot verify, but will accept and attempt delivery")
		case "HELP":
			s.reply(214, "2.0.0 commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT")
		case "EXPN", "TURN", "ETRN", "STARTTLS", "AUTH", "BDAT":
			s.reply(502, "5.5.1 "+strings.ToUpper(verb)+" not implemented")
		default:
			s.reply(500, "5.5.2 command not recognized")
			if s.tooManyErrors() {
				return nil
			}
		}
	}
}

func (s *smtpSession) tooManyErrors() bool {
	s.bad++
	if s.bad >= maxBadCommands {
		s.reply(421, "4.7.0 too many errors, closing")
		s.w.Flush()
		return true
	}
	return false
}

func (s *smtpSession) reset() {
	s.mailFrom = nil
	s.recipients = nil
}

// pathArg parses "FROM:<addr> params" or "TO:<addr> params": the address
// without brackets and the parameters.
func pathArg(arg, keyword string) (addr string, params []string, ok bool) {
	if len(arg) < len(keyword) || !strings.EqualFold(arg[:len(keyword)], keyword) {
		return "", nil, false
	}
	rest := strings.TrimSpace(arg[len(keyword):])
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", nil, false
		}
		addr, rest = rest[1:end], rest[end+1:]
		// A source route "<@a,@b:user@host>" is obsolete; drop it.
		if strings.HasPrefix(addr, "@") {
			if i := strings.IndexByte(addr, ':'); i >= 0 {
				addr = addr[i+1:]
			}
		}
	} else {
		// Lenient: "MAIL FROM: user@host" without brackets.
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return "", nil, false
		}
		addr, rest = fields[0], strings.Join(fields[1:], " ")
	}
	if len(addr) >= 1000 {
		return "", nil, false
	}
	return addr, strings.Fields(rest), true
}

func (s *smtpSession) mail(arg string) {
	if s.mailFrom != nil {
		s.reply(503, "5.5.1 nested MAIL command")
		return
	}
	addr, params, ok := pathArg(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.4 syntax: MAIL FROM:<address>")
		return
	}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "SIZE") {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > s.maxSize {
				s.reply(552, "5.3.4 message size exceeds the limit of "+strconv.FormatInt(s.maxSize, 10)+" bytes")
				return
			}
		}
	}
	if err := proto.CheckSender(addr); err != nil {
		s.reply(553, "5.1.7 sender refused: "+oneLine(err.Error()))
		return
	}
	if addr != "" {
		addr = s.rewrite(addr)
		if err := proto.CheckSender(addr); err != nil {
			s.reply(553, "5.1.7 sender refused after adding the default host: "+oneLine(err.Error()))
			return
		}
	}
	s.mailFrom = &addr
	s.reply(250, "2.1.0 Ok")
}

func (s *smtpSession) rcpt(arg string) {
	if s.mailFrom == nil {
		s.reply(503, "5.5.1 MAIL first")
		return
	}
	addr, _, ok := pathArg(arg, "TO:")
	if !ok {
		s.reply(501, "5.5.4 syntax: RCPT TO:<address>")
		return
	}
	if err := proto.CheckRecipient(addr); err != nil {
		s.reply(553, "5.1.3 recipient refused: "+oneLine(err.Error()))
		return
	}
	if len(s.recipients) >= maxRecipients {
		s.reply(452, "4.5.3 too many recipients")
		return
	}
	addr = s.rewrite(addr)
	if err := proto.CheckRecipient(addr); err != nil {
		s.reply(553, "5.1.3 recipient refused after adding the default host: "+oneLine(err.Error()))
		return
	}
	s.recipients = append(s.recipients, addr)
	s.reply(250, "2.1.5 Ok")
}

// data reads the message up to the lone ".", undoing dot-stuffing and
// turning CRLF into LF, then submits it. A message over the size limit is
// read to its end and refused, so the session stays in step.
//
// SMTP smuggling: only CRLF "." CRLF ends the data. A line ending in a
// bare LF is taken as a line of text, but a "." line after or before a
// bare LF ends nothing: it is text (dot-unstuffed, so an empty line), and
// what follows it is more text, never commands. This is Postfix's
// smtpd_forbid_bare_newline = normalize, its default since 3.9: a
// program in front of sendmail -bs that reads "\n.\n" in its input as
// text cannot make qbox end the message there and read a second, forged
// one from the rest. A client that ends its data with a bare-LF dot
// gets no reply until it sends a proper CRLF "." CRLF, or sees nothing
// sent when it closes the session.
func (s *smtpSession) data(ctx context.Context) error {
	if s.mailFrom == nil {
		s.reply(503, "5.5.1 MAIL first")
		return nil
	}
	if len(s.recipients) == 0 {
		s.reply(554, "5.5.1 no valid recipients")
		return nil
	}
	s.reply(354, "End data with <CR><LF>.<CR><LF>")
	if err := s.w.Flush(); err != nil {
		return err
	}
	var buf spill.Buffer
	defer buf.Close()
	lw := &limitedWriter{w: &buf, max: s.maxSize}
	var writeErr error
	textLimit := limit(s.textLimit, maxDataLine)
	prevCRLF := s.crlf // the DATA command's line end comes before the first line
	for {
		line, err := s.readLine(textLimit)
		if err == io.EOF {
			return io.ErrUnexpectedEOF // the client died mid-message: nothing sent
		}
		if err != nil && !errors.Is(err, errLongLine) {
			return err
		}
		if errors.Is(err, errLongLine) && writeErr == nil {
			writeErr = fmt.Errorf("a line longer than %d bytes", textLimit)
		}
		if len(line) == 1 && line[0] == '.' && prevCRLF && s.crlf {
			break
		}
		prevCRLF = s.crlf
		if len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		if writeErr == nil {
			if _, err := lw.Write(line); err != nil {
				writeErr = err
			} else if _, err := lw.Write([]byte{'\n'}); err != nil {
				writeErr = err
			}
		}
	}
	env := proto.Envelope{Sender: *s.mailFrom, Recipients: s.recipients}
	s.reset()
	switch {
	case errors.Is(writeErr, errTooLarge):
		s.reply(552, "5.3.4 message size exceeds the limit of "+strconv.FormatInt(s.maxSize, 10)+" bytes")
	case writeErr != nil && strings.HasPrefix(writeErr.Error(), "a line longer"):
		s.reply(554, "5.6.0 "+writeErr.Error())
	case writeErr != nil:
		s.reply(451, "4.3.0 "+oneLine(writeErr.Error()))
	default:
		code, text := s.submit(ctx, env, &buf)
		s.reply(code, text)
	}
	return nil
}

func limit(set, def int) int {
	if set > 0 {
		return set
	}
	return def
}

var errLongLine = errors.New("line too long")

// readLine reads one line without its CRLF or LF, and sets s.crlf when
// it ended in CRLF. A line longer than max is consumed to its end and
// reported with errLongLine, the line's start returned. io.EOF comes only
// with no partial line; a final partial line is returned as a line.
func (s *smtpSession) readLine(max int) ([]byte, error) {
	var line []byte
	long := false
	s.crlf = false
	for {
		frag, err := s.r.ReadSlice('\n')
		if !long {
			// max counts the text; the CRLF may follow it.
			if room := max + 2 - len(line); len(frag) > room {
				long = true
				line = append(line, frag[:room]...)
			} else {
				line = append(line, frag...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(line) == 0:
			return nil, io.EOF
		case err != nil && err != io.EOF:
			return nil, err
		}
		break
	}
	if long {
		return line, errLongLine
	}
	lf := bytes.HasSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\n'})
	cr := bytes.HasSuffix(line, []byte{'\r'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	s.crlf = lf && cr
	return line, nil
}

// oneLine makes server or error text fit one SMTP reply line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(proto.Printable(s, 2000)), " ")
}
