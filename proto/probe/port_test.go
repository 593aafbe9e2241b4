package probe

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// Port against in-process servers (the real ones, Postfix and mailfront,
// are in commands/probe's peers tests): each first word a port can say,
// judged against what was expected.
func TestPortJudges(t *testing.T) {
	for _, c := range []struct {
		says    string // "" says nothing; "hang-up" closes at once
		expect  Protocol
		heard   Heard
		verdict Verdict
		note    string
	}{
		{"", QMQP, Silence, OK, "open and silent, as a QMQP server is"},
		{"", SMTP, Silence, Unexpected, "no SMTP greeting"},
		{"12:DError: nope,", QMQP, Netstring, Unexpected, `refused before any data: reply D "Error: nope"`},
		{"5:hello,", QMTP, Netstring, Unexpected, `a netstring before any data, which QMTP forbids: netstring "hello"`},
		{"220 mx ESMTP\r\n", SMTP, SMTPBanner, OK, "SMTP greeting: 220 mx ESMTP"},
		{"220 mx ESMTP\r\n", QMTP, SMTPBanner, Unexpected, "an SMTP server, not QMTP"},
		{"554-no\r\n554 go away\r\n", SMTP, SMTPBanner, Unexpected, "SMTP refusal: 554-no / 554 go away"},
		// 64 bytes or more: enough to judge without waiting for more.
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3, a banner of 64 bytes or more\r\n", SMTP, Other, Unexpected,
			`not SMTP: unrecognised bytes "SSH-2.0-OpenSSH_9.2p1 Debian`},
		{"hang-up", QMQP, HangUp, Unexpected, "closed the connection without a word"},
	} {
		stop := make(chan struct{})
		addr := listen(t, func(conn net.Conn) {
			switch c.says {
			case "hang-up":
				return
			case "":
			default:
				conn.Write([]byte(c.says))
			}
			<-stop
		})
		// Silence is what is left when Wait ends; a port that speaks is
		// judged on its words, which on a busy machine may take a while
		// to come: a long Wait never slows a complete greeting down.
		wait := 30 * time.Second
		if c.says == "" {
			wait = 300 * time.Millisecond
		}
		p := &Prober{ConnectTimeout: 30 * time.Second, Wait: wait}
		r := p.Port(context.Background(), addr, c.expect)
		close(stop)
		if r.State != Open || r.Heard != c.heard || r.Verdict != c.verdict || !strings.Contains(r.Note, c.note) {
			t.Errorf("%q expecting %s: %+v", c.says, c.expect, r)
		}
	}
}

// JSON carries a verdict's name, and reads it back.
func TestVerdictJSON(t *testing.T) {
	b, err := json.Marshal(PortResult{State: Closed, Verdict: Down})
	if err != nil || !strings.Contains(string(b), `"verdict":"down"`) {
		t.Fatalf("%s, %v", b, err)
	}
	var r PortResult
	if err := json.Unmarshal(b, &r); err != nil || r.Verdict != Down {
		t.Fatalf("read back %v, %v", r.Verdict, err)
	}
	if err := json.Unmarshal([]byte(`{"verdict":"fine"}`), &r); err == nil {
		t.Error("an unknown verdict name was accepted")
	}
	if _, err := json.Marshal(PortResult{Verdict: 7}); err == nil {
		t.Error("verdict 7 was written")
	}
}
