package smtp

import (
	"fmt"
	"strings"
	"testing"

	"qbox/proto"
)

// stages renders each result as status/stage/accepted/sent/fromServer.
func stages(results []proto.Result) string {
	var parts []string
	for _, r := range results {
		parts = append(parts, fmt.Sprintf("%c/%d/%v/%v/%v", r.Reply.Status, r.Stage, r.RcptAccepted, r.Sent, r.FromServer))
	}
	return strings.Join(parts, " ")
}

// Each result says which reply decided it, whether RCPT accepted the
// recipient, and whether the whole message was sent: what qmail-remote
// needs to word its reports (a refused recipient, the reply to the
// message, a refused DATA).
func TestResultStages(t *testing.T) {
	s := &scriptServer{
		ehlo: []string{"PIPELINING"},
		rcpt: func(a string) string {
			switch {
			case strings.HasPrefix(a, "bad"):
				return "550 5.1.1 no"
			case strings.HasPrefix(a, "tmp"):
				return "451 4.3.0 later"
			}
			return "250 ok"
		},
		data: func(body []byte) string {
			if strings.Contains(string(body), "spam") {
				return "554 5.7.1 spam"
			}
			return "250 queued"
		},
	}
	addr := startServer(t, s.handle)
	results, err := deliver(t, &Client{TLS: TLSNone}, addr, []proto.Message{
		bytesMessage("s@example.test", []byte("good\n"), "ok@x", "bad@x", "tmp@x"),
		bytesMessage("s@example.test", []byte("spam\n"), "ok@x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("K/%d/true/true/true D/%d/false/false/true Z/%d/false/false/true D/%d/true/true/true",
		proto.StageMessage, proto.StageRcpt, proto.StageRcpt, proto.StageMessage)
	if got := stages(results); got != want {
		t.Errorf("stages %s, want %s", got, want)
	}
}

// A connection lost after the message's "." was written: no reply, but
// the result says RCPT accepted the recipient and the message was sent
// (qmail-remote's "Possible duplicate!"). A refused greeting is the
// greeting's.
func TestResultStagesLost(t *testing.T) {
	lost := startServer(t, func(p *peer) {
		p.send("220 hi\r\n")
		for {
			l, err := p.line()
			if err != nil {
				return
			}
			switch strings.ToUpper(strings.SplitN(l, " ", 2)[0]) {
			case "DATA":
				p.send("354 go\r\n")
				for {
					l, err := p.line()
					if err != nil || l == "." {
						return // closes after the dot
					}
				}
			default:
				p.send("250 ok\r\n")
			}
		}
	})
	results, _ := deliver(t, &Client{TLS: TLSNone}, lost, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@x")})
	if got, want := stages(results), fmt.Sprintf("Z/%d/true/true/false", proto.StageNone); got != want {
		t.Errorf("lost after the dot: %s, want %s", got, want)
	}

	refused := startServer(t, func(p *peer) { p.send("554 not now\r\n"); p.line() })
	results, _ = deliver(t, &Client{TLS: TLSNone}, refused, []proto.Message{bytesMessage("s@example.test", []byte("x\n"), "a@x")})
	if got, want := stages(results), fmt.Sprintf("Z/%d/false/false/true", proto.StageGreeting); got != want {
		t.Errorf("greeting refused: %s, want %s", got, want)
	}
}
