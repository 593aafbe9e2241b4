package serve_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/qmqp"
	"qbox/proto/testkit/counting"
)

// crashMessage is the message for a token: its size and content follow
// from the token alone, so a stored copy can be checked for completeness.
func crashMessage(token string) []byte {
	n := 100 + (len(token)*7919+int(token[len(token)-1])*104729)%90000
	var b bytes.Buffer
	b.WriteString("Subject: " + token + "\n\n")
	for b.Len() < n {
		b.WriteString(token)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// kill -9 during a 20-session load: afterwards every message that got K is
// in new/, intact, and nothing in new/ is partial.
func TestCrashKeepsEveryK(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--maildir", dir)

	var mu sync.Mutex
	acked := map[string]bool{}
	enough := make(chan struct{}) // closed at the 300th K
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &qmqp.Client{Servers: []string{s.qmqp}, Timeout: 10 * time.Second, ConnectTimeout: 2 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				token := fmt.Sprintf("crash-%d-%d-%d", g, i, i*i%97)
				msg := crashMessage(token)
				r, err := c.Send(context.Background(), proto.Envelope{Sender: "load@example.test", Recipients: []string{token + "@example.test"}}, bytes.NewReader(msg), int64(len(msg)))
				if err != nil {
					if ce := (*proto.ConnectError)(nil); errors.As(err, &ce) {
						return // the server is gone
					}
					continue // cut mid-session: outcome unknown, not a K
				}
				if r.Status == proto.OK {
					mu.Lock()
					acked[token] = true
					if len(acked) == 300 {
						close(enough)
					}
					mu.Unlock()
				}
			}
		}()
	}
	// Let the load run until a good number of K's, then kill.
	select {
	case <-enough:
	case <-time.After(time.Minute): // a guard; the kill comes anyway
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 50 {
		t.Fatalf("only %d K's before the kill: the load did not run", len(acked))
	}
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
			t.Errorf("%s got K but is not in new/", token)
		}
	}
	t.Logf("%d messages acknowledged before kill -9, %d in new/, %d in tmp/", len(acked), len(stored), counting.Files(t, filepath.Join(dir, "tmp")))
}
