package sendmail

import (
	"errors"
	"io"
)

var errTooLarge = errors.New("message too large")

// limitedWriter fails with errTooLarge once more than max bytes are
// written (max <= 0: no limit).
type limitedWriter struct {
	w   io.Writer
	max int64
	n   int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.max > 0 && l.n+int64(len(p)) > l.max {
		return 0, errTooLarge
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}
