// What the QMQP and QMTP servers, both netstring protocols with K/Z/D
// replies, share: the reply texts they have in common, the immediate
// refusal, reading an address item, labelling a read failure, and the
// pooled buffers.

package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"unsafe"

	"qbox/netstring"
	"qbox/proto"
)

// Reply texts both servers give, in qmail's style with enhanced status
// codes (RFC 3463).
var (
	ReplyTooBig      = proto.D("sorry, that message size exceeds my databytes limit (#5.3.4)")
	ReplyStoreFailed = proto.Z("sorry, I can't store the message right now (#4.3.0)")
)

// RefuseNetstring writes the immediate D a client outside the access list gets,
// before anything is read.
func RefuseNetstring(w io.Writer) error {
	_, err := w.Write(netstring.Append(nil, proto.D(NotAuthorized).Bytes()))
	return err
}

// ReadAddress reads one address netstring, allocating only for an
// acceptable length. ok is false (and the address empty or partial) when
// it is longer than max or check refuses it (CR, LF or NUL; an empty
// recipient): the one check where an address enters, so nothing further
// down ever sees such bytes.
func ReadAddress(b *netstring.Body, max int, check func(string) error) (addr string, ok bool, err error) {
	if b.Size() > int64(max) {
		return "", false, b.Discard()
	}
	buf := make([]byte, b.Size())
	if _, err := io.ReadFull(b, buf); err != nil {
		return "", false, err
	}
	if err := b.Close(); err != nil {
		return "", false, err
	}
	if len(buf) > 0 {
		// buf is never written again: the string shares it rather than
		// copy it (10,000 recipients per session, --max-conns sessions).
		addr = unsafe.String(&buf[0], len(buf))
	}
	return addr, check(addr) == nil, nil
}

// ReadError labels a failure reading what (the "sender", say) for a
// server whose errors start with prefix ("qmqp"): grammar errors wrap
// errProtocol; the client going away or timing out keeps its own error.
func ReadError(prefix string, errProtocol error, what string, err error) error {
	switch {
	case err == io.EOF, errors.Is(err, netstring.ErrUnexpectedEOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: client went away while sending the %s", prefix, what)
	case errors.Is(err, netstring.ErrGrammar):
		return fmt.Errorf("%w: %s: %v", errProtocol, what, err)
	default:
		return fmt.Errorf("%s: reading %s: %w", prefix, what, err)
	}
}

// Buffers are pooled: a busy server runs thousands of short sessions.
var (
	readers  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}
	copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// GetReader returns a pooled 32 KiB reader over r; PutReader gives it back.
func GetReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// PutReader gives back a reader GetReader returned.
func PutReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// GetCopyBuf returns a pooled 32 KiB buffer; PutCopyBuf gives it back.
func GetCopyBuf() *[]byte { return copyBufs.Get().(*[]byte) }

// PutCopyBuf gives back a buffer GetCopyBuf returned.
func PutCopyBuf(b *[]byte) { copyBufs.Put(b) }
