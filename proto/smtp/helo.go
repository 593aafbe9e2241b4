package smtp

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"qbox/proto"
	"qbox/proto/message"
)

// maxControlLine bounds the first line of control/helohost and control/me,
// as qbox's other control-file readers do: a host name is at most 255
// bytes, so a longer line is not one.
const maxControlLine = 4096

// DefaultHelo is the name to say EHLO with when none is given, as
// qmail-remote chooses it: control/helohost, else control/me, under
// $QMAILHOME (getenv, usually os.Getenv; default /var/qmail), else this
// machine's host name. A missing file moves on to the next; an unreadable
// one, or a name with a space or a control byte, is an error.
func DefaultHelo(getenv func(string) string) (string, error) {
	ctl := filepath.Join(message.QmailHome(getenv), "control")
	for _, name := range []string{"helohost", "me"} {
		v, err := firstControlLine(filepath.Join(ctl, name))
		if err != nil {
			return "", err
		}
		if v != "" {
			return checkHelo(v, filepath.Join(ctl, name))
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "", fmt.Errorf("no control/helohost, no control/me and no host name: %v", err)
	}
	return checkHelo(host, "the host name")
}

func checkHelo(name, from string) (string, error) {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == 0x7f {
			return "", fmt.Errorf("%s: %q is not a host name", from, proto.Printable(name, 100))
		}
	}
	return name, nil
}

// firstControlLine returns a control file's first line, trimmed; a missing
// file is "". It reads at most maxControlLine+1 bytes whatever the file's
// size. (proto/message has the same reader, unexported.)
func firstControlLine(path string) (string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, maxControlLine+1)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	b = b[:n]
	i := bytes.IndexByte(b, '\n')
	if i < 0 && n > maxControlLine {
		return "", fmt.Errorf("%s: first line longer than %d bytes", path, maxControlLine)
	}
	if i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b)), nil
}
