//go:build peers

package serve_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto/testkit/counting"
	"qbox/proto/testkit/testpeer"
	"qbox/proto/testkit/testtls"
)

// swaks runs swaks against addr and returns its transcript.
func swaks(t *testing.T, addr string, args ...string) string {
	t.Helper()
	bin := testpeer.Require(t, "swaks", "swaks")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, append([]string{"--server", host, "--port", port, "--helo", "client.example.test",
		"--timeout", "30"}, args...)...)
	out, _ := cmd.CombinedOutput() // its exit code says which step failed; the transcript says more
	return string(out)
}

// dataReply is the server's reply to the final dot in a swaks transcript.
func dataReply(transcript string) string {
	lines := strings.Split(transcript, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "-> ." || strings.TrimSpace(l) == "~> ." {
			for _, r := range lines[i+1:] {
				r = strings.TrimSpace(r)
				if strings.HasPrefix(r, "<-") || strings.HasPrefix(r, "<~") || strings.HasPrefix(r, "<**") || strings.HasPrefix(r, "<~*") {
					return strings.TrimSpace(strings.TrimLeft(r, "<-~*"))
				}
			}
		}
	}
	return ""
}

// swaks delivers into serve --smtp, pipelined and not, and a client
// verifying the certificate after STARTTLS (crypto/tls through go-smtp's
// client: swaks needs Net::SSLeay for it, which Debian only recommends):
// each 250 after the dot is one stored file per recipient, the body as
// sent (CRLF made LF), the Received line naming SMTP or ESMTPS and the
// client's address; EHLO offers PIPELINING, 8BITMIME, SIZE with
// --max-size, ENHANCEDSTATUSCODES and STARTTLS.
func TestSMTPSwaksDelivers(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t)
	s, addr := startSMTP(t, "--maildir", dir, "--tls-cert", cert, "--tls-key", key, "--max-size", "1M")
	cases := []struct {
		name  string
		args  []string
		proto string
	}{
		{"plain", nil, "SMTP"},
		{"pipelined", []string{"--pipeline"}, "SMTP"},
	}
	want := map[string]string{} // recipient -> Received protocol
	for _, c := range cases {
		token := testpeer.Token(t)
		rcpts := []string{"a-" + c.name + "@example.test", "b-" + c.name + "@example.test"}
		body := "Subject: " + token + "\n\nline one\n.leading dot\n\x80 eight bit\n"
		out := swaks(t, addr, append([]string{"--from", "sender@example.test", "--to", strings.Join(rcpts, ","),
			"--data", body}, c.args...)...)
		if r := dataReply(out); !strings.HasPrefix(r, "250 2.0.0 ok ") {
			t.Fatalf("%s: reply to the dot %q\n%s", c.name, r, out)
		}
		for _, ext := range []string{"PIPELINING", "8BITMIME", "SIZE 1048576", "ENHANCEDSTATUSCODES"} {
			if !strings.Contains(out, "250-"+ext) && !strings.Contains(out, "250 "+ext) {
				t.Errorf("%s: EHLO reply lacks %s\n%s", c.name, ext, out)
			}
		}
		if c.proto == "SMTP" && !strings.Contains(out, "250-STARTTLS") {
			t.Errorf("STARTTLS not offered\n%s", out)
		}
		for _, r := range rcpts {
			want[r] = c.proto + "|" + body
		}
	}
	// STARTTLS, the server's certificate verified.
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := gosmtp.DialStartTLS(addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	tlsBody := "Subject: " + testpeer.Token(t) + "\n\nover TLS\n.leading dot\n"
	tlsRcpts := []string{"a-starttls@example.test", "b-starttls@example.test"}
	if err := c.SendMail("sender@example.test", tlsRcpts, strings.NewReader(strings.ReplaceAll(tlsBody, "\n", "\r\n"))); err != nil {
		t.Fatalf("over STARTTLS: %v", err)
	}
	c.Quit()
	for _, r := range tlsRcpts {
		want[r] = "ESMTPS|" + tlsBody[:len(tlsBody)-1] // the check below adds swaks's extra line end
	}

	files := readMaildir(t, dir)
	if len(files) != len(want) {
		t.Fatalf("%d files in new/, want %d", len(files), len(want))
	}
	for _, f := range files {
		w, ok := want[f.recipient]
		if !ok || f.sender != "sender@example.test" {
			t.Fatalf("%s: envelope <%s> -> %s", f.name, f.sender, f.recipient)
		}
		proto, body, _ := strings.Cut(w, "|")
		if !strings.Contains(f.received, " (127.0.0.1) by ") || !strings.Contains(f.received, " with "+proto+"; ") {
			t.Errorf("%s: Received line %q, want %s", f.name, f.received, proto)
		}
		// swaks ends the data with a line break of its own before the dot.
		if !bytes.HasSuffix(f.message, []byte(body[strings.Index(body, "\n\n"):]+"\n")) || bytes.Contains(f.message, []byte("\r")) {
			t.Errorf("%s: stored %q", f.name, f.message)
		}
		delete(want, f.recipient)
	}
	// A line is logged before the reply, and written out a moment later.
	line := `msg="smtp message" proto=SMTP remote=127.0.0.1`
	waitLogFor(t, s, time.Minute, func(log string) bool { return strings.Count(log, line) >= len(cases)+1 })
	if n := strings.Count(s.log.String(), line); n != len(cases)+1 {
		t.Errorf("%d message log lines, want %d:\n%s", n, len(cases)+1, s.log.String())
	}
}

// Postfix's smtp-source, 20 sessions at once: every message is stored
// once, and smtp-source saw no reply other than 2xx (it warns on any).
func TestSMTPSourceTwentySessions(t *testing.T) {
	const msgs = 200
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	token := testpeer.Token(t)
	bin := testpeer.Require(t, "smtp-source", "postfix")
	cmd := exec.Command(bin, "-s", "20", "-m", strconv.Itoa(msgs), "-l", "2000", "-S", token,
		"-f", "src@example.test", "-t", "rcpt@example.test", addr)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	files := readMaildir(t, dir)
	if len(files) != msgs {
		t.Fatalf("%d files in new/, want %d", len(files), msgs)
	}
	for _, f := range files {
		if f.sender != "src@example.test" || f.recipient != "rcpt@example.test" || !bytes.Contains(f.message, []byte(token)) {
			t.Fatalf("%s: <%s> -> %s, %q", f.name, f.sender, f.recipient, f.message)
		}
	}
}

// Issue 25: smtp-source -s 500, a burst of 500 SMTP clients at once, is
// served as a QMQP one is: those beyond the 200 slots wait for theirs,
// every message is stored and smtp-source sees no 421.
func TestSMTPSourceBurst(t *testing.T) {
	const msgs = 2000
	dir := t.TempDir()
	s, addr := startSMTP(t, "--maildir", dir)
	bin := testpeer.Require(t, "smtp-source", "postfix")
	out, err := exec.Command(bin, "-s", "500", "-m", strconv.Itoa(msgs), "-l", "2000",
		"-f", "src@example.test", "-t", "rcpt@example.test", addr).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("smtp-source: %v\n%s", err, tail(string(out), 2000))
	}
	if n := counting.Files(t, filepath.Join(dir, "new")); n != msgs {
		t.Fatalf("%d files in new/, want %d", n, msgs)
	}
	if strings.Contains(s.log.String(), "too many connections") {
		t.Fatalf("serve refused a connection:\n%s", tail(s.log.String(), 3000))
	}
}

// One reply per RCPT: 553 for a domain outside --rcpthosts, for a
// recipient with NUL in it and for one over 1000 bytes; 501 for the empty
// recipient (go-smtp's parser refuses it before the session sees it); 452 past
// --max-recipients; a --relay client may send anywhere. The message goes
// to the accepted ones only. A sender with NUL is 553.
func TestSMTPRepliesPerRecipient(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir, "--rcpthosts", rcpthosts, "--max-recipients", "3")
	long := strings.Repeat("x", 1001) + "@example.test"
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<\"s\x00x\"@example.test>\r\n"+
		"MAIL FROM:<s@example.test>\r\n"+
		"RCPT TO:<ok1@example.test>\r\n"+
		"RCPT TO:<out@elsewhere.test>\r\n"+
		"RCPT TO:<\"nul\x00\"@example.test>\r\n"+
		"RCPT TO:<"+long+">\r\n"+
		"RCPT TO:<>\r\n"+
		"RCPT TO:<ok2@example.test>\r\n"+
		"RCPT TO:<ok3@example.test>\r\n"+
		"RCPT TO:<four@example.test>\r\n"+
		"DATA\r\nSubject: per rcpt\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "553 5.1.7 ", "250 ", "250 ", "553 5.7.1 ", "553 5.1.3 ", "553 5.1.3 ", "501 ", "250 ", "250 ", "452 4.5.3 ", "354 ", "250 2.0.0 ok ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q, want %d of them", replies, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(replies[i], want[i]) {
			t.Errorf("reply %d: %q, want %q...", i, replies[i], want[i])
		}
	}
	got := map[string]bool{}
	for _, f := range readMaildir(t, dir) {
		got[f.recipient] = true
	}
	if len(got) != 3 || !got["ok1@example.test"] || !got["ok2@example.test"] || !got["ok3@example.test"] {
		t.Errorf("stored for %v, want ok1, ok2, ok3", got)
	}

	// swaks, as a remote MTA sees it: 553 for the foreign domain.
	out := swaks(t, addr, "--from", "s@example.test", "--to", "out@elsewhere.test")
	if !strings.Contains(out, "<** 553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts") {
		t.Errorf("swaks to a foreign domain:\n%s", out)
	}

	// A relay client may send anywhere.
	dir2 := t.TempDir()
	_, relayAddr := startSMTP(t, "--maildir", dir2, "--rcpthosts", rcpthosts, "--relay", "127.0.0.0/8")
	out = swaks(t, relayAddr, "--from", "s@example.test", "--to", "out@elsewhere.test")
	if r := dataReply(out); !strings.HasPrefix(r, "250 ") || len(readMaildir(t, dir2)) != 1 {
		t.Errorf("relay client: %q\n%s", r, out)
	}
}

// --stdio smtp under tcpserver: swaks delivers, the greeting and the
// Received line name the host tcpserver -l gives, --rcpthosts holds, and
// $RELAYCLIENT (from tcpserver's rules) lets a client relay.
func TestSMTPStdioUnderTCPServer(t *testing.T) {
	rcpthosts := filepath.Join(t.TempDir(), "rcpthosts")
	if err := os.WriteFile(rcpthosts, []byte("example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func(env []string, dir string) string {
		return tcpServer(t, env, []string{"-R", "-H", "-l", "mx.example.test", "-c", "20"},
			testpeer.Binary(t), "serve", "--stdio", "smtp", "--maildir", dir, "--rcpthosts", rcpthosts)
	}
	dir := t.TempDir()
	addr := start(nil, dir)
	out := swaks(t, addr, "--from", "s@example.test", "--to", "r@example.test", "--pipeline")
	if !strings.Contains(out, "<-  220 mx.example.test ESMTP") || !strings.HasPrefix(dataReply(out), "250 2.0.0 ok ") {
		t.Fatalf("swaks under tcpserver:\n%s", out)
	}
	files := readMaildir(t, dir)
	if len(files) != 1 || !strings.HasPrefix(files[0].received, "Received: from unknown (127.0.0.1) by mx.example.test with SMTP; ") {
		t.Fatalf("stored %+v", files)
	}
	if out := swaks(t, addr, "--from", "s@example.test", "--to", "r@elsewhere.test"); !strings.Contains(out, "<** 553 5.7.1 ") {
		t.Errorf("a foreign domain without RELAYCLIENT:\n%s", out)
	}
	relayDir := t.TempDir()
	relay := start([]string{"RELAYCLIENT="}, relayDir)
	if out := swaks(t, relay, "--from", "s@example.test", "--to", "r@elsewhere.test"); !strings.HasPrefix(dataReply(out), "250 ") ||
		len(readMaildir(t, relayDir)) != 1 {
		t.Errorf("a foreign domain with RELAYCLIENT:\n%s", out)
	}
}

// systemd socket activation: a socket named smtp speaks SMTP, beside the
// qmtp one, with systemd's own tool passing them.
func TestSMTPSocketActivation(t *testing.T) {
	dir := t.TempDir()
	smtpAddr := socketActivate(t, []string{"qmtp", "smtp"}, testpeer.Binary(t), "serve", "--maildir", dir)[1]
	out := swaks(t, smtpAddr, "--from", "a@example.test", "--to", "s@example.test")
	if !strings.HasPrefix(dataReply(out), "250 2.0.0 ok ") {
		t.Fatalf("SMTP on the activated socket:\n%s", out)
	}
	files := readMaildir(t, dir)
	if len(files) != 1 || files[0].recipient != "s@example.test" || !strings.Contains(files[0].received, " with SMTP; ") {
		t.Fatalf("stored %+v", files)
	}
}

// selfSigned writes a certificate and key for localhost.
func selfSigned(t *testing.T) (certFile, keyFile string) { return testtls.New(t).Files(t) }
