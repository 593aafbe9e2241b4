package serve_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"qbox/netstring"
	protoserver "qbox/proto/server"
	"qbox/proto/testkit/testpeer"
)

// serveStdio runs `qbox serve --stdio protocol` with input on stdin and
// env added, and returns its stdout once it has exited.
func serveStdio(t *testing.T, protocol, dir string, input []byte, env ...string) []byte {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), "serve", "--stdio", protocol, "--maildir", dir)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("serve --stdio %s: %v\n%s", protocol, err, stderr.String())
	}
	if t.Failed() {
		t.Log(stderr.String())
	}
	return out
}

// --stdio applies the access list to the client tcpserver names
// (TCPREMOTEIP): one outside it is refused at once (D for QMQP and QMTP,
// a 554 greeting for SMTP) and nothing is stored; a loopback client and
// a local pipe (no address at all) are served.
func TestStdioAccessList(t *testing.T) {
	msg := "Subject: stdio\n\nx\n"
	var inner []byte
	inner = netstring.AppendString(inner, msg)
	inner = netstring.AppendString(inner, "a@example.test")
	inner = netstring.AppendString(inner, "b@example.test")
	qmqpPkg := netstring.Append(nil, inner)
	refusedD := string(netstring.AppendString(nil, "D"+protoserver.NotAuthorized))

	dir := t.TempDir()
	for _, c := range []struct {
		protocol string
		input    []byte
		env      []string
		want     string // prefix of the output
	}{
		{"qmqp", qmqpPkg, []string{"TCPREMOTEIP=192.0.2.7"}, refusedD},
		{"qmtp", qmtpPackage([]byte(msg), false, "a@example.test", "b@example.test"), []string{"TCPREMOTEIP=192.0.2.7"}, refusedD},
		{"smtp", []byte("QUIT\r\n"), []string{"TCPREMOTEIP=192.0.2.7"}, "554 5.7.1 " + protoserver.NotAuthorized + "\r\n"},
	} {
		if got := string(serveStdio(t, c.protocol, dir, c.input, c.env...)); got != c.want {
			t.Errorf("%s from 192.0.2.7: %q, want %q", c.protocol, got, c.want)
		}
	}
	checkStored(t, dir, 0)
	for _, env := range [][]string{{"TCPREMOTEIP=127.0.0.1"}, nil} {
		if got := string(serveStdio(t, "qmqp", dir, qmqpPkg, env...)); !strings.HasPrefix(got, netstringPrefix(got)+"Kok") {
			t.Errorf("QMQP with %v: %q, want K", env, got)
		}
	}
	checkStored(t, dir, 2)
}

// netstringPrefix is the length and colon of the netstring s starts with.
func netstringPrefix(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[:i+1]
	}
	return ""
}
