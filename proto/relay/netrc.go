package relay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// MaxNetrc bounds a netrc file: it is refused, not read, when larger.
const MaxNetrc = 64 << 10

// maxToken bounds one word of a netrc file (a host, a login, a password).
const maxToken = 1024

// Credential is one netrc entry.
type Credential struct {
	Machine  string // "" for the default entry
	Login    string
	Password string
}

// Netrc is a parsed netrc file: the entries in file order.
type Netrc struct{ Entries []Credential }

// Find returns the password for login at machine: the first entry for
// that machine whose login matches (an entry without a login matches any),
// else the default entry. ok is false when none matches.
func (n *Netrc) Find(machine, login string) (Credential, bool) {
	for _, e := range n.Entries {
		if e.Machine != "" && strings.EqualFold(e.Machine, machine) && (e.Login == "" || e.Login == login) {
			return e, true
		}
	}
	for _, e := range n.Entries {
		if e.Machine == "" && (e.Login == "" || e.Login == login) {
			return e, true
		}
	}
	return Credential{}, false
}

// ParseNetrc reads a netrc file as curl, msmtp and ftp do: words
// separated by white space; "machine NAME", "default", then "login NAME",
// "password SECRET", "account X" in any order; "macdef NAME" skips to the
// next blank line; '#' starts a comment at the beginning of a word. A
// word may be "quoted" with \" and \\ escapes, so a password may hold
// spaces.
func ParseNetrc(b []byte) (*Netrc, error) {
	if len(b) > MaxNetrc {
		return nil, fmt.Errorf("netrc larger than %d bytes", MaxNetrc)
	}
	t := &tokenizer{s: string(b)}
	n := &Netrc{}
	var cur *Credential
	for {
		w, err := t.next()
		if err != nil {
			return nil, err
		}
		if w == "" && t.eof() {
			break
		}
		switch w {
		case "machine":
			m, err := t.value("machine")
			if err != nil {
				return nil, err
			}
			n.Entries = append(n.Entries, Credential{Machine: m})
			cur = &n.Entries[len(n.Entries)-1]
		case "default":
			n.Entries = append(n.Entries, Credential{})
			cur = &n.Entries[len(n.Entries)-1]
		case "login", "password", "account":
			v, err := t.value(w)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, fmt.Errorf("netrc: %q before any machine", w)
			}
			switch w {
			case "login":
				cur.Login = v
			case "password":
				cur.Password = v
			}
		case "macdef":
			if _, err := t.value("macdef"); err != nil {
				return nil, err
			}
			t.skipMacro()
			cur = nil
		default:
			return nil, fmt.Errorf("netrc: unknown word %q", printable(w))
		}
		if len(n.Entries) > 10000 {
			return nil, errors.New("netrc: more than 10000 entries")
		}
	}
	return n, nil
}

type tokenizer struct {
	s string
	i int
}

func (t *tokenizer) eof() bool { return t.i >= len(t.s) }

func (t *tokenizer) value(key string) (string, error) {
	v, err := t.next()
	if err != nil {
		return "", err
	}
	if v == "" && t.eof() {
		return "", fmt.Errorf("netrc: %s without a value", key)
	}
	return v, nil
}

// next returns the next word; "" at the end of the input.
func (t *tokenizer) next() (string, error) {
	for {
		for t.i < len(t.s) && isSpace(t.s[t.i]) {
			t.i++
		}
		if t.i < len(t.s) && t.s[t.i] == '#' {
			for t.i < len(t.s) && t.s[t.i] != '\n' {
				t.i++
			}
			continue
		}
		break
	}
	if t.eof() {
		return "", nil
	}
	var b strings.Builder
	if t.s[t.i] == '"' {
		t.i++
		for {
			if t.eof() {
				return "", errors.New("netrc: unterminated quoted word")
			}
			c := t.s[t.i]
			t.i++
			if c == '"' {
				break
			}
			if c == '\\' && !t.eof() {
				c = t.s[t.i]
				t.i++
			}
			if c == 0 || c == '\n' || c == '\r' {
				return "", errors.New("netrc: control byte in a quoted word")
			}
			b.WriteByte(c)
			if b.Len() > maxToken {
				return "", fmt.Errorf("netrc: word longer than %d bytes", maxToken)
			}
		}
		return b.String(), nil
	}
	for !t.eof() && !isSpace(t.s[t.i]) {
		if t.s[t.i] == 0 {
			return "", errors.New("netrc: NUL byte")
		}
		b.WriteByte(t.s[t.i])
		t.i++
		if b.Len() > maxToken {
			return "", fmt.Errorf("netrc: word longer than %d bytes", maxToken)
		}
	}
	return b.String(), nil
}

// skipMacro skips a macdef body: up to and including the next empty line.
func (t *tokenizer) skipMacro() {
	j := strings.Index(t.s[t.i:], "\n\n")
	if j < 0 {
		t.i = len(t.s)
		return
	}
	t.i += j + 2
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// ErrUnsafeNetrc is wrapped when a netrc file may have been read or
// written by someone else: not a regular file, not owned by the caller or
// root, or readable or writable by group or others.
var ErrUnsafeNetrc = errors.New("unsafe netrc file")

// LoadNetrc reads and parses the netrc file at path, opened without
// following a symbolic link, refused unless it is a regular file owned by
// the caller or root, with no permission for group or others, and at most
// MaxNetrc bytes.
func LoadNetrc(path string) (*Netrc, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link", ErrUnsafeNetrc, path)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrUnsafeNetrc, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
			return nil, fmt.Errorf("%w: %s belongs to uid %d, not to you (uid %d) or root", ErrUnsafeNetrc, path, st.Uid, uid)
		}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; group and others may not have any access (chmod 600)", ErrUnsafeNetrc, path, fi.Mode().Perm())
	}
	if fi.Size() > MaxNetrc {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxNetrc)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxNetrc+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	n, err := ParseNetrc(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
