package serve_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"qbox/proto/testpeer"
)

// startSMTP runs qbox serve with an SMTP listener besides QMQP and QMTP
// and returns the server and the SMTP address.
func startSMTP(t *testing.T, args ...string) (*server, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	s := startServe(t, append([]string{"--smtp", addr}, args...)...)
	waitListening(t, s, addr)
	return s, addr
}

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

// selfSigned writes a certificate and key for localhost.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
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
	s, addr := startSMTP(t, "--maildir", dir, "--smtp-cert", cert, "--smtp-key", key, "--max-size", "1M")
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
	if n := strings.Count(s.log.String(), `msg="smtp message" proto=SMTP remote=127.0.0.1`); n != len(cases)+1 {
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

// smtpConv sends a whole pipelined conversation and returns every reply
// line the server wrote until it closed.
func smtpConv(t *testing.T, addr, input string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(input)); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// finalReplies drops the continuation lines (EHLO's).
func finalReplies(lines []string) []string {
	var out []string
	for _, l := range lines {
		if len(l) >= 4 && l[3] == ' ' {
			out = append(out, l)
		}
	}
	return out
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

// SMTP smuggling: only CRLF "." CRLF ends the data. "\n.\n" and
// "\r\n.\n" inside it are text, so one DATA stores one message, never a
// second one made of what follows; bare LFs are stored as line ends.
func TestSMTPSmugglingStoresOneMessage(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	for i, sep := range []string{"\n.\n", "\r\n.\n", "\n.\r\n"} {
		replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
			"MAIL FROM:<s@example.test>\r\nRCPT TO:<first@example.test>\r\nDATA\r\n"+
			"Subject: smuggle "+strconv.Itoa(i)+"\r\n\r\nbody"+sep+
			"MAIL FROM:<forged@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"))
		want := []string{"220 ", "250 ", "250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
		if len(replies) != len(want) {
			t.Fatalf("%q: replies %q", sep, replies)
		}
		for j := range want {
			if !strings.HasPrefix(replies[j], want[j]) {
				t.Fatalf("%q: reply %d %q, want %q", sep, j, replies[j], want[j])
			}
		}
	}
	files := readMaildir(t, dir)
	if len(files) != 3 {
		t.Fatalf("%d files, want 3 (one per DATA)", len(files))
	}
	for _, f := range files {
		if f.recipient != "first@example.test" || f.sender != "s@example.test" ||
			!bytes.Contains(f.message, []byte("MAIL FROM:<forged@example.test>\nRCPT TO:<victim@example.test>\nDATA\nforged\n")) {
			t.Errorf("%s: <%s> -> %s: %q", f.name, f.sender, f.recipient, f.message)
		}
	}
}

// --max-size bounds the message as SIZE counts it: MAIL with a larger
// SIZE= gets 552, and so does a message that outgrows it, after its dot;
// nothing is stored and the session goes on. A client outside the access
// list (QMTP's) is greeted with 554.
func TestSMTPSizeAndAccess(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir, "--max-size", "1K")
	big := strings.Repeat("0123456789abcdef\r\n", 100)
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test> SIZE=5000\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n"+big+".\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "552 ", "250 ", "250 ", "354 ", "552 5.3.4 ", "250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q", replies)
	}
	for j := range want {
		if !strings.HasPrefix(replies[j], want[j]) {
			t.Errorf("reply %d %q, want %q", j, replies[j], want[j])
		}
	}
	if n := len(readMaildir(t, dir)); n != 1 {
		t.Errorf("%d files, want 1", n)
	}

	_, refused := startSMTP(t, "--maildir", t.TempDir(), "--allow-qmtp", "10.0.0.0/8")
	if got := smtpConv(t, refused, "EHLO c.test\r\n"); len(got) != 1 || !strings.HasPrefix(got[0], "554 5.7.1 ") {
		t.Errorf("a client outside --allow-qmtp got %q, want a 554 greeting", got)
	}
}

// kill -9 under SMTP load: every message whose dot got 250 is in new/,
// intact; nothing in new/ is partial.
func TestSMTPCrashKeepsEvery250(t *testing.T) {
	const senders, enough = 12, 150
	dir := t.TempDir()
	s, addr := startSMTP(t, "--maildir", dir)

	var mu sync.Mutex
	acked := map[string]bool{}
	reached := make(chan struct{})
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10*enough; i++ { // bounded, whatever happens
				c, err := gosmtp.Dial(addr)
				if err != nil {
					return // the server is gone
				}
				c.CommandTimeout, c.SubmissionTimeout = 20*time.Second, 20*time.Second
				for j := 0; j < 5; j++ {
					token := fmt.Sprintf("smtp-crash-%d-%d-%d", g, i, j)
					msg := bytes.ReplaceAll(crashMessage(token), []byte("\n"), []byte("\r\n"))
					if c.SendMail("load@example.test", []string{token + "@example.test"}, bytes.NewReader(msg)) != nil {
						break // cut: outcome unknown, not a 250
					}
					mu.Lock()
					acked[token] = true
					if len(acked) == enough {
						close(reached)
					}
					mu.Unlock()
				}
				c.Close()
			}
		}()
	}
	select {
	case <-reached:
	case <-time.After(90 * time.Second):
		t.Fatal("the load never reached its count")
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	stored := map[string]bool{}
	for _, f := range readMaildir(t, dir) {
		token, ok := strings.CutSuffix(f.recipient, "@example.test")
		if !ok || !bytes.Equal(f.message, crashMessage(token)) {
			t.Fatalf("%s in new/ is not an intact message (%d bytes, for %s)", f.name, len(f.message), f.recipient)
		}
		stored[token] = true
	}
	for token := range acked {
		if !stored[token] {
			t.Errorf("%s got 250 but is not in new/", token)
		}
	}
	t.Logf("%d messages got 250 before kill -9, %d in new/", len(acked), len(stored))
}

// The queue program's exit decides the reply to the dot, which comes only
// after it exited: 0 is 250, a temporary failure (71) 451, a permanent
// one (31) 554.
func TestSMTPQueueProgramExitDecides(t *testing.T) {
	work := t.TempDir()
	script := filepath.Join(work, "qq")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat >/dev/null\ncat <&1 >/dev/null\nexit $(cat \"$1/code\")\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, addr := startSMTP(t, "--queue-program", script, "--", work)
	for _, c := range []struct{ code, reply string }{{"0", "250 2.0.0 "}, {"71", "451 4.3.0 "}, {"31", "554 5.3.0 "}} {
		if err := os.WriteFile(filepath.Join(work, "code"), []byte(c.code+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\n"+
			"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: qq\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
		if len(replies) != 8 || !strings.HasPrefix(replies[6], c.reply) {
			t.Errorf("exit %s: replies %q, want %q after the dot", c.code, replies, c.reply)
		}
	}
}

// SIGTERM: an SMTP session waiting for a command outside a transaction
// is closed at once (421), one in the middle of its data finishes and
// gets its 250, and serve exits well within --grace.
func TestSMTPGracefulStop(t *testing.T) {
	dir := t.TempDir()
	s, addr := startSMTP(t, "--maildir", dir, "--grace", "60s")
	dial := func(input string, untilPrefix string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte(input))
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", untilPrefix, err)
			}
			if strings.HasPrefix(l, untilPrefix) {
				return c, br
			}
		}
	}
	idle, idleR := dial("EHLO idle.test\r\n", "250 ")
	busy, busyR := dial("EHLO busy.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<busy@example.test>\r\nDATA\r\nSubject: busy\r\n\r\n", "354 ")

	s.cmd.Process.Signal(syscall.SIGTERM)
	l, err := idleR.ReadString('\n')
	if !strings.HasPrefix(l, "421 ") {
		t.Fatalf("idle SMTP client after SIGTERM: %q %v, want 421", l, err)
	}
	if _, err := idleR.ReadByte(); err == nil {
		t.Fatal("idle SMTP connection still open after its 421")
	}
	idle.Close()
	busy.Write([]byte("the rest\r\n.\r\n"))
	if l, err := busyR.ReadString('\n'); !strings.HasPrefix(l, "250 2.0.0 ok ") {
		t.Fatalf("message in flight at SIGTERM: %q %v", l, err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second): // half the grace period
		t.Fatal("serve still running after SIGTERM: an idle SMTP session holds it up")
	}
	if s.err != nil {
		t.Fatalf("serve exited with %v", s.err)
	}
	if files := readMaildir(t, dir); len(files) != 1 || files[0].recipient != "busy@example.test" {
		t.Fatalf("%d files after the stop, want the busy one", len(files))
	}
}

// --timeout bounds each wait for the client: a silent client gets 421
// 4.4.2, and one that stalls in the middle of its data too, with nothing
// stored.
func TestSMTPIdleTimeout(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir, "--timeout", "1s")
	for _, input := range []string{"", "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: half\r\n"} {
		replies := finalReplies(smtpConv(t, addr, input))
		if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], "421 4.4.2 ") {
			t.Errorf("after %q: replies %q, want 421 4.4.2 last", input, replies)
		}
	}
	if n := countFiles(t, filepath.Join(dir, "new")); n != 0 {
		t.Errorf("%d files stored from a stalled message", n)
	}
}

// CHUNKING, which go-smtp offers: BDAT chunks make one message, stored
// with LF line ends once the LAST chunk is in; a message abandoned by
// RSET between chunks is not stored, and the next BDAT transaction gets
// its own reply (go-smtp would hand it the abandoned one's failure if
// the server did not wait for it: see proto/smtp's Mail).
func TestSMTPBdat(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	first, last := "Subject: bdat\r\n\r\nline one\r\n", ".dot kept\r\nend\r\n"
	replies := finalReplies(smtpConv(t, addr, "EHLO c.test\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\n"+
		"BDAT "+strconv.Itoa(len(first))+"\r\n"+first+"BDAT "+strconv.Itoa(len(last))+" LAST\r\n"+last+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<gone@example.test>\r\nBDAT 5\r\nSubjeRSET\r\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<next@example.test>\r\nBDAT 14 LAST\r\nSubject: next\n"+
		"MAIL FROM:<s@example.test>\r\nRCPT TO:<after@example.test>\r\nDATA\r\nSubject: after\r\n\r\nx\r\n.\r\nQUIT\r\n"))
	want := []string{"220 ", "250 ", "250 ", "250 ", "250 2.0.0 ", "250 2.0.0 ok ", // the first message
		"250 ", "250 ", "250 2.0.0 ", "250 ", // the one abandoned, RSET
		"250 ", "250 ", "250 2.0.0 ok ", // the next BDAT transaction
		"250 ", "250 ", "354 ", "250 2.0.0 ok ", "221 "}
	if len(replies) != len(want) {
		t.Fatalf("replies %q", replies)
	}
	for j := range want {
		if !strings.HasPrefix(replies[j], want[j]) {
			t.Errorf("reply %d %q, want %q", j, replies[j], want[j])
		}
	}
	got := map[string][]byte{}
	for _, f := range readMaildir(t, dir) {
		got[f.recipient] = f.message
	}
	if len(got) != 3 || !bytes.HasSuffix(got["next@example.test"], []byte("Subject: next\n")) || !bytes.HasSuffix(got["r@example.test"], []byte("Subject: bdat\n\nline one\n.dot kept\nend\n")) ||
		!bytes.HasSuffix(got["after@example.test"], []byte("Subject: after\n\nx\n")) {
		t.Fatalf("stored %q", got)
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
	ts := testpeer.Require(t, "tcpserver", "ucspi-tcp")
	start := func(env []string, dir string) string {
		addr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
		host, port, _ := net.SplitHostPort(addr)
		testpeer.Start(t, env, ts, "-R", "-H", "-l", "mx.example.test", "-c", "20", host, port,
			testpeer.Binary(t), "serve", "--stdio", "smtp", "--maildir", dir, "--rcpthosts", rcpthosts)
		testpeer.WaitListening(t, addr, 10*time.Second)
		return addr
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
	activate := testpeer.Require(t, "systemd-socket-activate", "systemd")
	dir := t.TempDir()
	qmtpAddr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	smtpAddr := "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	testpeer.Start(t, nil, activate, "-l", qmtpAddr, "-l", smtpAddr, "--fdname=qmtp:smtp",
		testpeer.Binary(t), "serve", "--maildir", dir)
	testpeer.WaitListening(t, smtpAddr, 10*time.Second)
	out := swaks(t, smtpAddr, "--from", "a@example.test", "--to", "s@example.test")
	if !strings.HasPrefix(dataReply(out), "250 2.0.0 ok ") {
		t.Fatalf("SMTP on the activated socket:\n%s", out)
	}
	files := readMaildir(t, dir)
	if len(files) != 1 || files[0].recipient != "s@example.test" || !strings.Contains(files[0].received, " with SMTP; ") {
		t.Fatalf("stored %+v", files)
	}
}

// Commands pipelined after QUIT, or after the server closed on too many
// errors, are never acted on: no message is stored that no 250 could
// announce, and the session ends (go-smtp alone would go on with the
// commands it had already read).
func TestSMTPNothingAfterClose(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSMTP(t, "--maildir", dir)
	msg := "EHLO c.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: late\r\n\r\nx\r\n.\r\n"
	for _, c := range []struct{ before, last string }{
		{"EHLO c.test\r\nQUIT\r\n", "221 "},
		{"\r\n\r\n\r\n\r\n", "500 5.5.1 Too many errors"},
	} {
		replies := finalReplies(smtpConv(t, addr, c.before+msg))
		if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], c.last) {
			t.Errorf("%q: replies %q, want %q last", c.before, replies, c.last)
		}
	}
	if n := countFiles(t, filepath.Join(dir, "new")); n != 0 {
		t.Errorf("%d messages stored after the connection was closed", n)
	}
}
