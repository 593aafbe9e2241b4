package control

import (
	"fmt"
	"os"
	"path/filepath"

	"qbox/proto"
)

// Helo is the name to say EHLO with when none is given, as qmail-remote
// chooses it: control/helohost, else control/me, under $QMAILHOME
// (getenv, usually os.Getenv; default /var/qmail), else this machine's
// host name. A missing file moves on to the next; an unreadable one, or
// a name with a space or a control byte, is an error.
func Helo(getenv func(string) string) (string, error) {
	return HeloFrom(filepath.Join(Home(getenv), "control"))
}

// HeloFrom is Helo with the control directory given.
func HeloFrom(ctl string) (string, error) {
	for _, name := range []string{"helohost", "me"} {
		v, err := FirstLine(filepath.Join(ctl, name))
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
