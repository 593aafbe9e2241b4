package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"qbox/proto"
	"qbox/proto/store/maildir"
)

// envelopeLines is what a queue file's or a drop file's envelope says.
type envelopeLines struct {
	sender       string
	rcpts        []string
	lastErr      string // the last E line: why the last attempt failed
	submitted    int64  // the S line, nanoseconds since the epoch
	hasSubmitted bool
	offset       int64 // where the message starts
}

// readEnvelopeLines reads the envelope both queue files and drop files
// start with: the header line magic, then F, T, E and S lines up to an
// empty line. Each line is at most maildir.MaxEnvelopeLine bytes and the
// whole envelope at most limit bytes (tooLong says so); noHeader is the
// error for a file that does not start with magic. positiveTime refuses
// an S line that is not after the epoch.
func readEnvelopeLines(br *bufio.Reader, magic string, limit int64, tooLong, noHeader error, positiveTime bool) (envelopeLines, error) {
	var e envelopeLines
	line := func() (string, error) {
		var b []byte
		for {
			chunk, err := br.ReadSlice('\n')
			b = append(b, chunk...)
			if len(b) > maildir.MaxEnvelopeLine+1 {
				return "", errors.New("an envelope line is too long")
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return "", errors.New("the envelope ends early")
			}
			e.offset += int64(len(b))
			if e.offset > limit {
				return "", tooLong
			}
			return string(b[:len(b)-1]), nil
		}
	}
	first, err := line()
	if err != nil || first+"\n" != magic {
		return envelopeLines{}, noHeader
	}
	sender := false
	for {
		l, err := line()
		if err != nil {
			return envelopeLines{}, err
		}
		if l == "" {
			break
		}
		switch l[0] {
		case 'F':
			if sender {
				return envelopeLines{}, errors.New("two senders")
			}
			e.sender, sender = l[1:], true
		case 'T':
			e.rcpts = append(e.rcpts, l[1:])
		case 'E':
			e.lastErr = l[1:]
		case 'S':
			ns, err := strconv.ParseInt(l[1:], 10, 64)
			if err != nil || (positiveTime && ns <= 0) {
				return envelopeLines{}, errors.New("a bad submission time")
			}
			e.submitted, e.hasSubmitted = ns, true
		default:
			return envelopeLines{}, fmt.Errorf("unknown envelope line %q", proto.Printable(l, 40))
		}
	}
	if !sender || len(e.rcpts) == 0 {
		return envelopeLines{}, errors.New("no sender or no recipients")
	}
	return e, nil
}

// copyMessageSync writes the message (size bytes of msg) after the
// envelope buffered in w, flushes w and syncs f: the file is durable
// when it returns nil.
func copyMessageSync(w *bufio.Writer, f *os.File, msg io.ReaderAt, size int64) error {
	n, err := io.Copy(w, io.NewSectionReader(msg, 0, size))
	if err == nil && n != size {
		err = fmt.Errorf("message is %d bytes, expected %d", n, size)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	return err
}
