package qmailremote

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"qbox/commands/exitcode"
	"qbox/commands/spill"
)

// Main is the qmail-remote personality: `qmail-remote host sender
// recip...`, the message on fd 0, the reports on fd 1, exit 0 always
// (qmail-rspawn takes any other status for a crash of the program).
func Main(args []string) int {
	// A reader that went away must not kill us with SIGPIPE: qmail-rspawn
	// would report a crash. The write fails instead, and we exit 0.
	signal.Ignore(syscall.SIGPIPE)
	Run(context.Background(), Config{Getenv: os.Getenv}, args, os.Stdin, os.Stdout)
	return exitcode.Code(nil, exitcode.QmailRemote)
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
