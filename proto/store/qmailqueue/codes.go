package qmailqueue

import "qbox/proto"

// Exit codes of the qmail-queue interface (qmail-queue(8), qmail-qmqpc).
const (
	ExitOK             = 0  // queued (or, for qmail-qmqpc, the server said K)
	ExitAddressTooLong = 11 // an envelope address is too long
	ExitRejected       = 31 // the mail server permanently rejected the message (D)
	ExitNoMemory       = 51 // out of memory
	ExitReadError      = 54 // error reading the message or envelope
	ExitConfig         = 55 // configuration unreadable, or no usable server
	ExitNetwork        = 56 // trouble making a network connection (socket error)
	ExitHome           = 61 // cannot chdir to the qmail home
	ExitTempRejected   = 71 // the mail server temporarily rejected the message (Z)
	ExitConnectTimeout = 72 // the (last) connection attempt timed out
	ExitConnectRefused = 73 // the (last) connection attempt was refused
	ExitSession        = 74 // communication with the mail server failed after connecting
	ExitInternal       = 81 // internal bug
	ExitCustomReply    = 82 // notqmail: the reply text was written on fd 6
	ExitBadEnvelope    = 91 // envelope format error
)

// ExitReply maps a qmail-queue exit code to the reply its caller gives,
// with qmail's texts (qmail.c qmail_close): 0 is K, 11-40 are permanent,
// anything else temporary.
func ExitReply(code int) proto.Reply {
	switch code {
	case ExitOK:
		return proto.K("ok")
	case ExitAddressTooLong, 115:
		return proto.D("envelope address too long for qq (#5.1.3)")
	case ExitRejected:
		return proto.D("mail server permanently rejected message (#5.3.0)")
	case ExitNoMemory:
		return proto.Z("qq out of memory (#4.3.0)")
	case 52:
		return proto.Z("qq timeout (#4.3.0)")
	case 53:
		return proto.Z("qq write error or disk full (#4.3.0)")
	case ExitReadError:
		return proto.Z("qq read error (#4.3.0)")
	case ExitConfig:
		return proto.Z("qq unable to read configuration (#4.3.0)")
	case ExitNetwork:
		return proto.Z("qq trouble making network connection (#4.3.0)")
	case ExitHome:
		return proto.Z("qq trouble in home directory (#4.3.0)")
	case 62, 63, 64, 65, 66:
		return proto.Z("qq trouble creating files in queue (#4.3.0)")
	case ExitTempRejected:
		return proto.Z("mail server temporarily rejected message (#4.3.0)")
	case ExitConnectTimeout:
		return proto.Z("connection to mail server timed out (#4.4.1)")
	case ExitConnectRefused:
		return proto.Z("connection to mail server rejected (#4.4.1)")
	case ExitSession:
		return proto.Z("communication with mail server failed (#4.4.2)")
	case ExitInternal, ExitBadEnvelope:
		return proto.Z("qq internal bug (#4.3.0)")
	case 120:
		return proto.Z("unable to exec qq (#4.3.0)")
	}
	if code >= 11 && code <= 40 {
		return proto.D("qq permanent problem (#5.3.0)")
	}
	return proto.Z("qq temporary problem (#4.3.0)")
}

// CustomReply parses what a program that exited 82 wrote on fd 6 (a
// notqmail extension): a D or Z reply. Anything else (K, empty, junk)
// gives ok=false and the caller falls back to ExitReply(82).
func CustomReply(b []byte) (proto.Reply, bool) {
	if len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	r, err := proto.ParseReply(b)
	if err != nil || r.Status == proto.OK || len(r.Text) < 1 {
		return proto.Reply{}, false
	}
	return r, true
}
