// Package message prepares a message for injection as qmail-inject does:
// it completes the header (Date, Message-ID, From, "Cc: recipient list not
// shown: ;"), removes Bcc, Resent-Bcc, Return-Path and Content-Length,
// extracts recipients from the header, resolves the envelope sender and
// turns CRLF line ends into LF. The header is held in memory (bounded);
// the body is streamed, so a message of any size costs the same memory.
//
// As qmail-inject does, the addresses in From, To, Cc, Reply-To, Sender,
// Return-Receipt-To, Errors-To, Apparently-To and their Resent- forms are
// completed in the header as in the envelope (a bare box gets the
// default host, a dotless host the default domain); only their host
// parts change, the rest of the field stays as written.
//
// Every envelope address is checked where it is completed here, the one
// place all client paths share: an address holding CR, LF or NUL, or an
// empty recipient, from an argument, a header field or the environment,
// is refused (*RefusedError), never parsed or rewritten into another
// one; so is a full name, From address or Message-ID host that would
// split the header line it is added in.
package message

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"qbox/proto"
)

// DefaultMaxHeader bounds the header read into memory.
const DefaultMaxHeader = 1 << 20

// ErrHeaderTooLarge is returned when the header exceeds Config.MaxHeader.
var ErrHeaderTooLarge = errors.New("message header too large")

// Options are one injection's command-line choices.
type Options struct {
	// Sender is -f: nil when not given; "" (or "<>") is the null sender.
	// It overrides Return-Path and the environment.
	Sender *string
	// Recipients from the command line; rewritten like header ones.
	Recipients []string
	// HeaderRecipients adds To, Cc, Bcc and Apparently-To (Resent-To,
	// Resent-Cc and Resent-Bcc in a resent message) to Recipients (-t).
	HeaderRecipients bool
}

// Message is a prepared message: the completed header in memory, the
// body as a stream.
type Message struct {
	// Header is the completed header, including the blank line that ends
	// it when the message has a body.
	Header []byte
	// Body streams the rest of the input with CRLF turned into LF and a
	// final newline added when missing.
	Body io.Reader
	// BodyOffset is where the body starts in the input, in input bytes:
	// a caller with a seekable input can seek there and wrap the input in
	// NormalizeBody again (to count the size first, then send).
	BodyOffset int64
	// Sender is the envelope sender ("" is the null sender).
	Sender string
	// Recipients are the envelope recipients: command-line ones first,
	// then those from the header when asked for; rewritten.
	Recipients []string
	// Resent reports that the message had Resent-* fields.
	Resent bool
}

// Reader returns the whole prepared message: header, then body.
func (m *Message) Reader() io.Reader {
	return io.MultiReader(bytes.NewReader(m.Header), m.Body)
}

// header field kinds qmail-inject knows about.
type field struct {
	name string // lower case
	text string // the whole field, continuation lines and final "\n" included
}

func (f field) value() string {
	i := strings.IndexByte(f.text, ':')
	return f.text[i+1:]
}

var processCount atomic.Uint64

// Prepare reads r's header, completes it and returns the message with its
// body still to be read from r.
func Prepare(r io.Reader, cfg Config, opts Options) (*Message, error) {
	max := cfg.MaxHeader
	if max <= 0 {
		max = DefaultMaxHeader
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	var (
		fields   []field
		offset   int64 // input bytes consumed by the header
		total    int   // header bytes held
		body     io.Reader
		blank    bool // the header ended with an empty line
		bodyLine []byte
	)
	for {
		line, raw, err := readLine(br, max-total)
		if err == errLineTooLong {
			if headerish(line) {
				return nil, fmt.Errorf("%w (over %d bytes)", ErrHeaderTooLarge, max)
			}
			bodyLine = line
			break
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 { // EOF with no partial line
			break
		}
		if err == io.EOF {
			line = append(line, '\n')
		}
		if len(line) == 1 { // "\n": end of header
			offset += int64(raw)
			blank = true
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].text += string(line)
		} else if bytes.HasPrefix(line, []byte("From ")) {
			fields = append(fields, field{name: "mbox-line", text: "MBOX-Line: " + string(line)})
		} else if name, ok := fieldName(line); ok {
			fields = append(fields, field{name: name, text: string(line)})
		} else {
			bodyLine = line[:len(line):len(line)]
			if err == io.EOF { // the '\n' added above was not in the input
				bodyLine = bodyLine[:len(bodyLine)-1]
			}
			break
		}
		offset += int64(raw)
		total += len(line)
		if err == io.EOF {
			break
		}
	}
	src := io.Reader(br)
	if bodyLine != nil {
		// The first line that is not a field starts the body; qmail
		// inserts the blank line that separates them.
		blank = true
		src = io.MultiReader(bytes.NewReader(bodyLine), br)
	}
	body = NormalizeBody(src)

	m := &Message{Body: body, BodyOffset: offset}
	if err := complete(m, fields, blank, cfg, opts); err != nil {
		return nil, err
	}
	return m, nil
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most max bytes, turning a final CRLF
// into LF. It returns the line, the number of input bytes it took, and
// io.EOF for a final line without newline (or no line at all). When the
// line is longer than max it returns what it read with errLineTooLong
// (raw then counts those bytes, already consumed).
func readLine(br *bufio.Reader, max int) ([]byte, int, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			line = append(line, chunk...)
			return line, len(line), errLineTooLong
		}
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		raw := len(line)
		if err == nil && len(line) >= 2 && line[len(line)-2] == '\r' {
			line[len(line)-2] = '\n'
			line = line[:len(line)-1]
		}
		return line, raw, err
	}
}

// headerish reports whether a partial line could still be a header field
// (so that refusing it as too large is right) rather than body text.
func headerish(line []byte) bool {
	if len(line) == 0 {
		return false
	}
	if line[0] == ' ' || line[0] == '\t' || bytes.HasPrefix(line, []byte("From ")) {
		return true
	}
	if _, ok := fieldName(line); ok {
		return true
	}
	for _, c := range line {
		if c <= 32 || c >= 127 {
			return false
		}
	}
	return true // a field name still without its colon
}

// fieldName returns the lower-cased name of a header field line: printable
// non-space characters, optional white space, then ':' (qmail's
// hfield_valid).
func fieldName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return "", false
	}
	for _, c := range name {
		if c <= 32 || c >= 127 {
			return "", false
		}
	}
	return strings.ToLower(string(name)), true
}

// complete builds the new header and the envelope.
func complete(m *Message, fields []field, blank bool, cfg Config, opts Options) error {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	start := now().UTC()
	pid := cfg.PID
	if pid == 0 {
		pid = os.Getpid()
	}

	seen := map[string]bool{}
	var kept []field
	var returnPath []string
	var toCc, resentToCc []string
	var toCcFields, resentFields []field // the fields toCc and resentToCc come from
	for _, f := range fields {
		switch {
		case cfg.Flags.DeleteFrom && f.name == "from",
			cfg.Flags.DeleteMessageID && f.name == "message-id",
			cfg.Flags.IgnoreReturnPath && f.name == "return-path":
			continue
		}
		seen[f.name] = true
		switch f.name {
		case "to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc", "resent-bcc":
			// Unparsable recipient fields are kept and contribute no
			// recipients, as in qmail-inject; their bytes are checked
			// all the same when they are asked for (-t).
			a, _ := ParseAddressList(f.value())
			if strings.HasPrefix(f.name, "resent-") {
				resentFields = append(resentFields, f)
				resentToCc = append(resentToCc, a...)
			} else {
				toCcFields = append(toCcFields, f)
				toCc = append(toCc, a...)
			}
		case "return-path":
			if opts.Sender != nil {
				break // -f decides; the field is removed unread
			}
			if err := checkField(f); err != nil {
				return err
			}
			a, err := parseList(f.value())
			if err != nil {
				return &RefusedError{What: "Return-Path field", Err: fmt.Errorf("%w: %v", ErrBadAddress, err)}
			}
			returnPath = append(returnPath, a...)
		}
		switch f.name {
		case "bcc", "resent-bcc", "return-path", "content-length":
			continue
		}
		f, err := completeField(f, cfg)
		if err != nil {
			return err
		}
		kept = append(kept, f)
	}
	resent := false
	for _, n := range []string{"resent-sender", "resent-from", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc", "resent-date", "resent-message-id"} {
		resent = resent || seen[n]
	}
	m.Resent = resent

	// Envelope sender: -f, else the incoming Return-Path, else the
	// environment's.
	senderWhat, senderCaller := "default sender ($QMAILSUSER, $QMAILSHOST, $USER, defaulthost)", true
	switch {
	case opts.Sender != nil:
		s := *opts.Sender
		if err := proto.CheckSender(s); err != nil {
			return &RefusedError{What: "sender argument", Caller: true, Err: err}
		}
		if s == "<>" {
			s = ""
		}
		if s != "" {
			a, err := parseList(s)
			if err != nil || len(a) != 1 {
				return &RefusedError{What: "sender argument", Caller: true,
					Err: fmt.Errorf("%w: %q", ErrBadAddress, proto.Printable(s, 200))}
			}
			s = cfg.Rewrite(a[0])
		}
		m.Sender = s
		senderWhat, senderCaller = "sender argument", true
	case len(returnPath) > 0:
		m.Sender = cfg.Rewrite(returnPath[0])
		if cfg.Flags.VERPRecipient {
			m.Sender += "-@[]"
		}
		senderWhat = "Return-Path field"
	default:
		user, host := cfg.SenderUser, cfg.SenderHost
		if user == "" {
			user = cfg.User
		}
		if host == "" {
			host = cfg.Host
		}
		if cfg.Flags.VERPMessage {
			user += "-" + strconv.FormatInt(start.Unix(), 10) + "." + strconv.Itoa(pid)
		}
		if cfg.Flags.VERPRecipient {
			user += "-"
		}
		s := user
		if host != "" {
			s += "@" + host
		}
		m.Sender = cfg.Rewrite(s)
		if cfg.Flags.VERPRecipient {
			m.Sender += "-@[]"
		}
	}

	// The envelope is checked here, where every client path (sendmail,
	// qmail-inject, qbox inject, sendmail -bs) completes it: the raw
	// text of an argument or header field before it is parsed (parsing
	// drops a group's name and comments, and a byte hidden there would
	// never reach the envelope, while the rest of the text still would:
	// "root@x.test\nX: y" parses as "y"), then every finished address
	// after rewriting (which adds the environment's host names).
	if err := proto.CheckSender(m.Sender); err != nil {
		return &RefusedError{What: senderWhat, Caller: senderCaller, Err: err}
	}
	for _, r := range opts.Recipients {
		if err := proto.CheckRecipient(r); err != nil {
			return &RefusedError{What: "recipient argument", Caller: true, Err: err}
		}
		a, err := parseList(r)
		if err != nil || len(a) != 1 {
			return &RefusedError{What: "recipient argument", Caller: true,
				Err: fmt.Errorf("%w: %q", ErrBadAddress, proto.Printable(r, 200))}
		}
		if err := proto.CheckRecipient(a[0]); err != nil {
			return &RefusedError{What: "recipient argument", Caller: true, Err: fmt.Errorf("%q: %w", r, err)}
		}
		a[0] = cfg.Rewrite(a[0])
		if err := proto.CheckRecipient(a[0]); err != nil {
			return &RefusedError{What: "recipient argument after adding the default host", Caller: true, Err: err}
		}
		m.Recipients = append(m.Recipients, a[0])
	}
	if opts.HeaderRecipients {
		list, from := toCc, toCcFields
		if resent {
			list, from = resentToCc, resentFields
		}
		for _, f := range from {
			if err := checkField(f); err != nil {
				return err
			}
		}
		for _, a := range list {
			a = cfg.Rewrite(a)
			if err := proto.CheckRecipient(a); err != nil {
				return &RefusedError{What: "header recipient after adding the default host", Caller: true, Err: err}
			}
			m.Recipients = append(m.Recipients, a)
		}
	}

	var h bytes.Buffer
	prefix := ""
	if resent {
		prefix = "Resent-"
	}
	if !seen[strings.ToLower(prefix)+"date"] {
		h.WriteString(prefix + "Date: " + FormatDate(start) + "\n")
	}
	if !seen[strings.ToLower(prefix)+"message-id"] {
		count := processCount.Add(1) - 1
		if cfg.Count != nil {
			count = cfg.Count()
		}
		if err := checkHeaderValue("Message-ID host ($QMAILIDHOST, control/idhost)", cfg.IDHost); err != nil {
			return err
		}
		h.WriteString(prefix + "Message-ID: " + MessageID(start, pid, count, cfg.IDHost) + "\n")
	}
	if !seen[strings.ToLower(prefix)+"from"] {
		if err := checkHeaderValue("full name (-F, $QMAILNAME, $MAILNAME, $NAME)", cfg.Name); err != nil {
			return err
		}
		from := cfg.From()
		if err := checkHeaderValue("From address (-f, $QMAILUSER, $USER, $QMAILHOST, defaulthost)", from); err != nil {
			return err
		}
		h.WriteString(prefix + "From: " + from + "\n")
	}
	if !seen[strings.ToLower(prefix)+"to"] && !seen[strings.ToLower(prefix)+"cc"] {
		h.WriteString(prefix + "Cc: recipient list not shown: ;\n")
	}
	for _, f := range kept {
		h.WriteString(f.text)
	}
	if blank {
		h.WriteByte('\n')
	}
	m.Header = h.Bytes()
	return nil
}

// checkField refuses a header field that gives envelope addresses when
// its unfolded value holds CR, LF or NUL anywhere: in an address, a
// comment or a group's name alike, since parsing would drop the latter
// two and keep what follows them.
func checkField(f field) error {
	if err := proto.CheckSender(unfold(f.value())); err != nil {
		name, _, _ := strings.Cut(f.text, ":")
		return &RefusedError{What: proto.Printable(name, 100) + " field", Err: err}
	}
	return nil
}

// checkHeaderValue refuses a value from the caller or the environment
// that would split the header field qbox adds with it.
func checkHeaderValue(what, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return &RefusedError{What: what, Caller: true, Err: fmt.Errorf("%w: %q", ErrHeaderBytes, proto.Printable(v, 200))}
	}
	return nil
}

// FormatDate formats t as qmail does: "26 Sep 1995 04:46:53 -0000" (UTC,
// no weekday, day without leading zero).
func FormatDate(t time.Time) string {
	return t.UTC().Format("2 Jan 2006 15:04:05 -0000")
}

// MessageID returns "<YYYYMMDDhhmmss.PID.qmail@idhost>" as qmail-inject
// makes it; count > 0 (the process's later messages) is inserted after
// the PID so that messages made in the same second stay unique.
func MessageID(t time.Time, pid int, count uint64, idhost string) string {
	id := "<" + t.UTC().Format("20060102150405") + "." + strconv.Itoa(pid)
	if count > 0 {
		id += "." + strconv.FormatUint(count, 10)
	}
	return id + ".qmail@" + idhost + ">"
}

// From returns the default From field's value: "Name" <user@host>, or
// user@host (Name) with the c flag.
func (cfg Config) From() string {
	user := cfg.User
	if user == "" {
		user = "anonymous"
	}
	addr := cfg.Rewrite(user + hostPart(cfg.Host))
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = quoteLocal(addr[:i]) + addr[i:]
	}
	switch {
	case cfg.Name == "":
		return addr
	case cfg.Flags.CommentFrom:
		return addr + " (" + commentText(cfg.Name) + ")"
	default:
		return quoteString(cfg.Name) + " <" + addr + ">"
	}
}

func hostPart(h string) string {
	if h == "" {
		return ""
	}
	return "@" + h
}

func commentText(s string) string {
	// CR, LF and NUL never get here: complete refuses such a name.
	r := strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`)
	return r.Replace(s)
}

// Rewrite completes an envelope address as qmail-inject does: "" and
// "x@[]" stay; a bare box gets @DefaultHost; a host ending in '+' gets
// PlusDomain instead of the '+'; a host without a dot (and not a
// [literal]) gets .DefaultDomain.
func (cfg Config) Rewrite(addr string) string {
	if addr == "" || strings.HasSuffix(addr, "@[]") {
		return addr
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		if cfg.DefaultHost == "" {
			return addr
		}
		addr += "@" + cfg.DefaultHost
		at = strings.LastIndexByte(addr, '@')
	}
	local, host := addr[:at], addr[at+1:]
	if strings.HasSuffix(host, "+") && cfg.PlusDomain != "" {
		host = strings.TrimSuffix(host, "+") + "." + cfg.PlusDomain
	}
	if !strings.Contains(host, ".") && !strings.HasPrefix(host, "[") && cfg.DefaultDomain != "" {
		host += "." + cfg.DefaultDomain
	}
	return local + "@" + host
}

// NormalizeBody returns a reader of r with every CRLF turned into LF (a
// lone CR is kept) and a final newline added to non-empty input that
// lacks one. Every other byte, 8-bit and NUL included, passes untouched.
func NormalizeBody(r io.Reader) io.Reader {
	return &normalizer{src: r}
}

type normalizer struct {
	src      io.Reader
	buf      []byte // buf[0] is reserved for a held-back CR
	out      []byte // normalized bytes not yet returned
	cr       bool   // a CR at the end of the last chunk, waiting for its successor
	last     byte   // last byte returned
	any      bool   // any byte returned
	err      error  // the source's error, returned once out is drained
	finished bool
}

func (n *normalizer) Read(p []byte) (int, error) {
	if n.buf == nil {
		// On first use: a message whose body is never read (refused,
		// or only its header wanted) costs no buffer.
		n.buf = make([]byte, 32<<10+1)
	}
	for len(n.out) == 0 {
		if n.err != nil {
			if n.finished {
				return 0, n.err
			}
			n.finished = true
			tail := n.buf[:0]
			if n.cr { // a lone CR at the very end
				tail = append(tail, '\r')
				n.cr = false
			}
			if n.err == io.EOF && (n.any || len(tail) > 0) {
				last := n.last
				if len(tail) > 0 {
					last = tail[len(tail)-1]
				}
				if last != '\n' {
					tail = append(tail, '\n')
				}
			}
			n.out = tail
			if len(tail) > 0 {
				n.last, n.any = tail[len(tail)-1], true
			}
			continue
		}
		m, err := n.src.Read(n.buf[1:])
		s := 1
		if n.cr {
			n.buf[0] = '\r'
			s = 0
			n.cr = false
		}
		data := n.buf[s : 1+m]
		w := 0
		for i := 0; i < len(data); {
			j := bytes.IndexByte(data[i:], '\r')
			if j < 0 {
				w += copy(data[w:], data[i:])
				break
			}
			w += copy(data[w:], data[i:i+j])
			i += j
			switch {
			case i+1 < len(data) && data[i+1] == '\n':
				i++ // drop the CR; the LF is copied next
			case i+1 == len(data) && err == nil:
				n.cr = true // decide when the next byte arrives
				i++
			default:
				data[w] = '\r'
				w++
				i++
			}
		}
		n.out = data[:w]
		if w > 0 {
			n.last, n.any = data[w-1], true
		}
		if err != nil {
			n.err = err
		}
	}
	k := copy(p, n.out)
	n.out = n.out[k:]
	return k, nil
}
