//go:build peers

package inject

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

func TestInjectToQmqpSink(t *testing.T) {
	sink := testpeer.QmqpSink(t)
	env, _ := baseEnv(t)
	code, stderr := inject(t, env, "Subject: to the sink\n\nhello\n", "-s", sink, "rcpt@example.test")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// Through Postfix's qmqpd into a real mailbox: the body arrives byte for
// byte, the header completed as qmail-inject would.
func TestInjectToPostfixQmqpd(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	var body bytes.Buffer
	fmt.Fprintf(&body, "token %s\n", token)
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&body, "line %d: 8-bit \xe4\xf6\xfc\xdf and a tab\there, trailing space \n", i)
	}
	body.WriteString(strings.Repeat("x", 990) + "\n")
	msg := "Subject: " + token + "\nTo: Someone <someone@" + pf.Domain + ">\n\n" + body.String()
	env, _ := baseEnv(t)
	code, stderr := inject(t, env, msg, "-s", pf.QMQPAddr, "-f", "sender@"+pf.Domain, "-t")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, token, 1, 30*time.Second)[0]
	if !bytes.Equal(testpeer.Body(got), body.Bytes()) {
		t.Fatalf("delivered body differs from the one sent (%d vs %d bytes)", len(testpeer.Body(got)), body.Len())
	}
	for _, want := range []string{"Return-Path: <sender@" + pf.Domain + ">", "\nDate: ", "\nMessage-ID: <", "\nFrom: tester@example.test\n", "\nSubject: " + token} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("delivered message lacks %q:\n%s", want, got[:bytes.Index(got, []byte("\n\n"))])
		}
	}
}

// A file on stdin is streamed from disk with its size; --raw keeps every
// byte, CRLF included. Postfix stores what it got.
func TestInjectRawFileToPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	msg := []byte("Subject: " + token + "\nX-Raw: yes\n\nraw body " + token + "\n\xff\xfe bytes\n")
	env, _ := baseEnv(t)
	code, stderr := inject(t, env, writeFile(t, "msg", msg), "--raw", "-s", pf.QMQPAddr, "-f", "", "raw@"+pf.Domain)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, token, 1, 30*time.Second)[0]
	if !bytes.Equal(testpeer.Body(got), testpeer.Body(msg)) {
		t.Fatalf("body differs:\n%q\nwant\n%q", testpeer.Body(got), testpeer.Body(msg))
	}
	if bytes.Contains(got, []byte("Message-ID:")) {
		t.Fatal("--raw added a Message-ID")
	}
	if !bytes.Contains(got, []byte("Return-Path: <>")) {
		t.Fatal("-f '' did not give the null sender")
	}
}
