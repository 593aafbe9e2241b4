package smtp

// The message as DATA carries it. Messages are stored with LF line ends;
// on the wire every LF becomes CRLF and a line starting with "." gets a
// second one, as qmail-remote sends them: a CR already in the message is
// kept as it is (a stored "a\r\n" goes as "a\r\r\n"), so the receiver's
// CRLF-to-LF conversion gives back exactly the stored bytes. A message
// not ending in LF gets a CRLF before the final ".": SMTP cannot carry a
// last line without an end.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
)

// copyBuffers are the buffers messages are read through.
var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// bodyInfo is what DATA needs to know before the message is sent.
type bodyInfo struct {
	wireSize int64 // bytes DATA sends, without the final ".\r\n"
	eightBit bool  // a byte with the high bit set
}

// scanBody reads exactly size bytes of the message.
func scanBody(r io.Reader, size int64) (bodyInfo, error) {
	var info bodyInfo
	buf := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(buf)
	var read int64
	bol := true // at the beginning of a line
	lr := io.LimitReader(r, size)
	for {
		n, err := lr.Read(buf[:])
		for _, c := range buf[:n] {
			switch {
			case c == '\n':
				info.wireSize += 2
				bol = true
				continue
			case c == '.' && bol:
				info.wireSize++
			case c >= 0x80:
				info.eightBit = true
			}
			info.wireSize++
			bol = false
		}
		read += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return info, err
		}
	}
	if read != size {
		return info, fmt.Errorf("message ended after %d of %d bytes", read, size)
	}
	if !bol {
		info.wireSize += 2
	}
	return info, nil
}

// errShortMessage is a message that ended before its Size.
var errShortMessage = errors.New("message shorter than its size")

// writeBody writes exactly size bytes of the message dot-stuffed with
// CRLF line ends, then the final ".\r\n", and flushes.
func writeBody(w *bufio.Writer, r io.Reader, size int64) error {
	buf := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(buf)
	var read int64
	bol := true
	lr := io.LimitReader(r, size)
	for {
		n, err := lr.Read(buf[:])
		chunk := buf[:n]
		for len(chunk) > 0 {
			if bol && chunk[0] == '.' {
				w.WriteByte('.')
			}
			i := 0
			for i < len(chunk) && chunk[i] != '\n' {
				i++
			}
			w.Write(chunk[:i])
			if i < len(chunk) {
				w.WriteString("\r\n")
				i++
				bol = true
			} else {
				bol = false
			}
			chunk = chunk[i:]
		}
		read += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("cannot read message: %w", err)
		}
	}
	if read != size {
		return fmt.Errorf("%w: ended after %d of %d bytes", errShortMessage, read, size)
	}
	if !bol {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	return w.Flush()
}
