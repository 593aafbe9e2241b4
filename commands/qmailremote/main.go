package qmailremote

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"qbox/commands/spill"
	"qbox/proto"
	"qbox/proto/qmail/control"
)

// Main is the qmail-remote personality: `qmail-remote host sender
// recip...`, the message on fd 0, the reports on fd 1, exit 0 always
// (qmail-rspawn takes any other status for a crash of the program): it
// returns no error, and exitcode.QmailRemote maps every one to 0.
func Main(args []string) error {
	// A reader that went away must not kill us with SIGPIPE: qmail-rspawn
	// would report a crash. The write fails instead, and we exit 0.
	signal.Ignore(syscall.SIGPIPE)
	Run(context.Background(), Config{Getenv: os.Getenv}, args, os.Stdin, os.Stdout)
	return nil
}

// Run is Main with its inputs and outputs given: args as the process got
// them (args[0] is the program's name).
func Run(ctx context.Context, cfg Config, args []string, stdin io.Reader, stdout io.Writer) {
	var reports []Report
	if len(args) < 4 {
		reports = []Report{{'D', textUsage}}
	} else {
		msg, release, err := readMessage(stdin)
		if err != nil {
			reports = []Report{{'Z', textRead + detail(err)}}
		} else {
			reports = Deliver(ctx, cfg, args[1], args[2], args[3:], msg)
			release()
		}
	}
	var b bytes.Buffer
	for _, r := range reports {
		b.Write(r.Bytes())
	}
	stdout.Write(b.Bytes()) // nothing to do on failure: the exit is 0 anyway
}

// readMessage makes fd 0 readable any number of times. qmail-rspawn gives
// qmail-remote the queue file itself, so a regular file is read in place
// from where its offset stands; a pipe is spilled (memory, then an
// unlinked temporary file).
func readMessage(stdin io.Reader) (Message, func(), error) {
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			off, err := f.Seek(0, io.SeekCurrent)
			if err == nil && off <= st.Size() {
				size := st.Size() - off
				return Message{Size: size, Open: func() (io.ReadCloser, error) {
					return io.NopCloser(io.NewSectionReader(f, off, size)), nil
				}}, func() {}, nil
			}
		}
	}
	var buf spill.Buffer
	if _, err := buf.ReadFrom(stdin); err != nil {
		buf.Close()
		return Message{}, nil, err
	}
	return Message{Size: buf.Size(), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(buf.Reader()), nil
	}}, func() { buf.Close() }, nil
}

// SpawnedUnderOtherName reports whether qbox, run under a name that is
// none of its personalities and with a first argument that is none of its
// commands, was started by qmail-rspawn to be qmail-remote: the working
// directory is <home>/queue/mess (qmail-rspawn's) and the arguments are
// host, sender and recipients. It returns the home the directory names.
func SpawnedUnderOtherName(args []string, getwd func() (string, error)) (string, bool) {
	if len(args) < 4 {
		return "", false
	}
	return control.SpawnedFrom(getwd)
}

// Misnamed answers qmail-rspawn for a qbox started under another name
// (QMAILREMOTE naming the qbox binary itself): qbox cannot tell it is to
// be qmail-remote, so it defers the message with a Z report that says how
// to fix the link, and exits 0. Any other exit would be qmail-rspawn's
// "Unable to run qmail-remote", a bounce for an exit of 100. Nothing goes
// to fd 2: qmail-rspawn joins it to fd 1. The caller exits under
// exitcode.QmailRemote.
func Misnamed(stdout io.Writer, argv0, home string) {
	stdout.Write(MisnamedReport(argv0, home).Bytes())
}

// MisnamedReport is Misnamed's report.
func MisnamedReport(argv0, home string) Report {
	name := proto.Printable(filepath.Base(argv0), 100)
	return Report{'Z', "qbox was run by qmail-rspawn as \"" + name + "\", not as qmail-remote, so it did not know what to do. (#4.3.5)\n" +
		proto.OneLine("qbox: qbox acts as qmail-remote when the name it is run by is qmail-remote: make $QMAILREMOTE (or "+
			proto.Printable(filepath.Join(home, "bin", "qmail-remote"), 300)+") a symbolic link named qmail-remote to the qbox binary, "+
			"e.g. ln -s "+proto.Printable(argv0, 300)+" "+proto.Printable(filepath.Join(home, "bin", "qmail-remote"), 300)+
			", and unset QMAILREMOTE or point it at that link; the message stays in the queue until then") + "\n"}
}
