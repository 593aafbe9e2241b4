// Package control reads qmail's control files ($QMAILHOME/control/...):
// the one place that knows where they are and how much of one may be
// read. Every reader is bounded before it allocates, whatever the file's
// size.
package control

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxLine bounds the first line of a one-line control file (me,
// helohost, defaulthost, ...): a host name is at most 255 bytes, so a
// longer line is not one.
const MaxLine = 4096

// DefaultHome is qmail's home when nothing says otherwise.
const DefaultHome = "/var/qmail"

// Home returns $QMAILHOME, else /var/qmail. An empty variable counts as
// unset. It is the rule of the programs run from anywhere (qmail-inject,
// sendmail, qmail-qmqpc as qmail-queue, maildirqmtp): their working
// directory says nothing about qmail.
func Home(getenv func(string) string) string {
	if h := getenv("QMAILHOME"); h != "" {
		return h
	}
	return DefaultHome
}

// SpawnDir is the working directory qmail-rspawn gives the programs it
// runs, under qmail's home: it changes to its compiled-in home, then to
// queue/mess, before it starts qmail-remote.
const SpawnDir = "queue/mess"

// Where says how a home was found, for messages that must tell an admin
// what to change.
type Where int

const (
	FromEnv     Where = iota // $QMAILHOME
	FromWorkDir              // the working directory, <home>/queue/mess
	FromDefault              // /var/qmail
)

func (w Where) String() string {
	switch w {
	case FromEnv:
		return "from $QMAILHOME"
	case FromWorkDir:
		return "from the working directory <home>/" + SpawnDir
	}
	return "the default: $QMAILHOME unset and the working directory not <home>/" + SpawnDir
}

// SpawnedHome is qmail's home for a program qmail-rspawn runs
// (qmail-remote), found as that program finds it when compiled in:
// $QMAILHOME when set (not empty); else, when the working directory
// (getwd, usually os.Getwd) is <dir>/queue/mess, <dir>; else /var/qmail.
func SpawnedHome(getenv func(string) string, getwd func() (string, error)) (string, Where) {
	if h := getenv("QMAILHOME"); h != "" {
		return h, FromEnv
	}
	if h, ok := SpawnedFrom(getwd); ok {
		return h, FromWorkDir
	}
	return DefaultHome, FromDefault
}

// SpawnedFrom returns <dir> when the working directory is
// <dir>/queue/mess, the directory qmail-rspawn runs its programs in.
func SpawnedFrom(getwd func() (string, error)) (string, bool) {
	if getwd == nil {
		return "", false
	}
	wd, err := getwd()
	if err != nil || !filepath.IsAbs(wd) {
		return "", false
	}
	wd = filepath.Clean(wd)
	mess, queue := filepath.Base(wd), filepath.Base(filepath.Dir(wd))
	if mess != "mess" || queue != "queue" {
		return "", false
	}
	home := filepath.Dir(filepath.Dir(wd))
	if home == wd || home == filepath.Dir(wd) {
		return "", false
	}
	return home, true
}

// Path is the control file name under Home.
func Path(getenv func(string) string, name string) string {
	return filepath.Join(Home(getenv), "control", name)
}

// FirstLine returns a control file's first line with surrounding white
// space trimmed; a missing file is "". At most MaxLine+1 bytes are read:
// a longer first line is an error.
func FirstLine(path string) (string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, MaxLine+1)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	b = b[:n]
	i := bytes.IndexByte(b, '\n')
	if i < 0 && n > MaxLine {
		return "", fmt.Errorf("%s: first line longer than %d bytes", path, MaxLine)
	}
	if i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b)), nil
}

// Read returns the whole file if it holds at most max bytes; a larger
// one is refused without being read into memory. A missing file gives an
// error satisfying errors.Is(err, os.ErrNotExist).
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}

// Lines returns the lines of a list file (qmqpservers, rcpthosts) with
// surrounding white space trimmed, blank lines and lines starting with
// '#' left out.
func Lines(b []byte) []string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out
}
