package message

import (
	"errors"
	"strings"
)

// ErrBadAddress is wrapped by every address that cannot be parsed.
var ErrBadAddress = errors.New("unparsable address")

// ErrHeaderBytes: a value qbox would write into a header field it adds
// (the full name, the user and host of From, the Message-ID host) holds
// CR, LF or NUL. Such a value is refused, never encoded or cleaned: a
// kept LF would start a header line of the caller's choosing (a Bcc, a
// second From).
var ErrHeaderBytes = errors.New("contains CR, LF or NUL")

// RefusedError is an address or header value that Prepare refuses before
// anything is sent. Callers map it to their permanent failure; Caller
// tells sendmail's two of them apart (64, a bad argument or environment;
// 65, bad data in the message).
type RefusedError struct {
	What   string // what was refused: "recipient argument", "To field", "full name", ...
	Caller bool   // it came from the command line or the environment, not from the message
	Err    error  // proto.ErrAddressBytes, proto.ErrEmptyRecipient, ErrHeaderBytes or ErrBadAddress
}

func (e *RefusedError) Error() string { return e.What + ": " + e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// token kinds of RFC 822 structured header text.
type tokKind int

const (
	tokAtom    tokKind = iota // atom, or any run of ordinary characters
	tokQuoted                 // "quoted string" (unquoted text)
	tokLiteral                // [domain literal] (with brackets)
	tokSpecial                // one of < > @ , ; : .
)

type token struct {
	kind tokKind
	text string
	// spaceBefore records white space or a comment before the token:
	// qmail reads "a b" in an address list as two addresses.
	spaceBefore bool
	// start and end are the token's byte offsets in the tokenized text,
	// so a header field can be completed in place (completeAddresses).
	start, end int
}

// unfold undoes header folding: a line break (LF or CRLF) followed by a
// space or tab is removed, and so is a final line break. Every other CR
// or LF stays, so that the address check sees it.
func unfold(s string) string {
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\n' && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '\t'):
			continue
		case s[i] == '\r' && i+2 < len(s) && s[i+1] == '\n' && (s[i+2] == ' ' || s[i+2] == '\t'):
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tokenize splits unfolded structured header text into tokens, dropping
// comments (nested, with quoted-pairs) and white space. White space is
// a space or a tab only: a CR, LF or NUL is an ordinary byte of the token
// it is in, so it reaches the envelope check and is refused there, rather
// than being taken for a separator that splits one argument into two
// addresses ("root@x\nX: y" is not "y").
func tokenize(s string) ([]token, error) {
	var toks []token
	space := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			space = true
			i++
		case c == '(':
			depth := 0
			for ; i < len(s); i++ {
				switch s[i] {
				case '\\':
					i++
				case '(':
					depth++
				case ')':
					depth--
				}
				if depth == 0 {
					break
				}
			}
			if depth != 0 {
				return nil, errors.New("unterminated comment")
			}
			i++
			space = true
		case c == ')':
			// Not a delimiter an atom could start with: without this
			// case a stray ')' made an empty atom and no progress, for
			// ever (sendmail ')' grew tokens until memory ran out).
			return nil, errors.New("unbalanced ')'")
		case c == '"':
			start := i
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, errors.New("unterminated quoted string")
			}
			toks = append(toks, token{kind: tokQuoted, text: b.String(), spaceBefore: space, start: start, end: i})
			space = false
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, errors.New("unterminated domain literal")
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i : i+j+1], spaceBefore: space, start: i, end: i + j + 1})
			space = false
			i += j + 1
		case strings.IndexByte("<>@,;:.", c) >= 0:
			toks = append(toks, token{kind: tokSpecial, text: s[i : i+1], spaceBefore: space, start: i, end: i + 1})
			space = false
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t()\"[<>@,;:.", s[j]) < 0 {
				j++
			}
			toks = append(toks, token{kind: tokAtom, text: s[i:j], spaceBefore: space, start: i, end: j})
			space = false
			i = j
		}
	}
	return toks, nil
}

func (t token) is(special string) bool { return t.kind == tokSpecial && t.text == special }

// ParseAddressList returns the addresses of an RFC 822 address list (the
// value of a To, Cc or Bcc field) as plain envelope addresses: display
// names, comments and groups' names are dropped, quoted local parts are
// unquoted, source routes are stripped. "<>" yields nothing. Addresses are
// not rewritten.
func ParseAddressList(s string) ([]string, error) {
	addrs, err := parseList(s)
	if err != nil {
		return nil, err
	}
	out := addrs[:0]
	for _, a := range addrs {
		if a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

// parseList is ParseAddressList keeping "<>" as an empty address (for
// Return-Path).
func parseList(s string) ([]string, error) {
	toks, err := tokenize(unfold(s))
	if err != nil {
		return nil, err
	}
	var addrs []string
	err = walkAddressList(toks,
		func(run []token) {
			for _, spec := range bareSpecs(run) {
				addrs = append(addrs, addrSpec(spec))
			}
		},
		func(inner []token) { addrs = append(addrs, addrSpec(inner)) })
	if err != nil {
		return nil, err
	}
	return addrs, nil
}

// walkAddressList walks a tokenized address list the way qmail-inject
// reads one, for both reading addresses and completing them in place:
// each run of tokens outside angle brackets up to a ',' or ';' (or the
// end) goes to bare, possibly empty; what is inside each <...>, its
// obsolete source route removed, goes to angle. A display name before
// '<', anything after '>' up to the next separator (a stray comment was
// already dropped) and a group's name before ':' ("friends: a, b;") are
// skipped. The slices passed are valid only during the call.
func walkAddressList(toks []token, bare, angle func([]token)) error {
	var cur []token // tokens of the current mailbox outside angle brackets
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.is(","), t.is(";"):
			bare(cur)
			cur = cur[:0]
		case t.is(":"):
			cur = cur[:0]
		case t.is("<"):
			j := i + 1
			for j < len(toks) && !toks[j].is(">") {
				j++
			}
			if j == len(toks) {
				return errors.New("missing '>'")
			}
			angle(stripRoute(toks[i+1 : j]))
			cur = cur[:0]
			i = j
			for i+1 < len(toks) && !toks[i+1].is(",") && !toks[i+1].is(";") {
				i++
			}
		case t.is(">"):
			return errors.New("unexpected '>'")
		default:
			cur = append(cur, t)
		}
	}
	bare(cur)
	return nil
}

// stripRoute removes an obsolete source route ("@a,@b:") from the tokens
// inside angle brackets.
func stripRoute(toks []token) []token {
	if len(toks) > 0 && toks[0].is("@") {
		for i, t := range toks {
			if t.is(":") {
				return toks[i+1:]
			}
		}
	}
	return toks
}

// bareSpecs splits the tokens of bare addr-specs into one run per
// address. Two words with white space and no '.' or '@' between them are
// two addresses, as qmail-inject reads them ("To: joe fred").
func bareSpecs(toks []token) [][]token {
	var out [][]token
	start := 0
	for i := 1; i < len(toks); i++ {
		prev, t := toks[i-1], toks[i]
		if t.spaceBefore && isWord(prev) && isWord(t) {
			out = append(out, toks[start:i])
			start = i
		}
	}
	if start < len(toks) {
		out = append(out, toks[start:])
	}
	return out
}

func isWord(t token) bool { return t.kind == tokAtom || t.kind == tokQuoted || t.kind == tokLiteral }

// addrSpec joins the tokens of local@domain without white space; a quoted
// local part comes out unquoted, as qmail's envelope addresses are.
func addrSpec(toks []token) string {
	var b strings.Builder
	for _, t := range toks {
		b.WriteString(t.text)
	}
	return b.String()
}

// quoteLocal quotes an address's local part for a header field when it
// holds characters an atom cannot.
func quoteLocal(local string) string {
	if local == "" {
		return `""`
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c >= 127 || strings.IndexByte(`()<>@,;:\".[]`, c) >= 0 {
			// Dots are fine between atoms; quote only when needed.
			if c == '.' && i > 0 && i < len(local)-1 && local[i-1] != '.' {
				continue
			}
			return quoteString(local)
		}
	}
	return local
}

func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
