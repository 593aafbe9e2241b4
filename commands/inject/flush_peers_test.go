//go:build peers

package inject

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

func TestFlushToPostfix(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	token := testpeer.Token(t)
	env, _ := baseEnv(t)
	dir := filepath.Join(t.TempDir(), "spool")
	env = append(env, "QBOX_SPOOL="+dir)
	msg := []byte("Subject: " + token + "\n\nbody " + token + "\n")
	enqueue(t, dir, msg, "me@"+pf.Domain, "r1@"+pf.Domain)
	code, stderr := inject(t, env, nil, "--flush", "-s", pf.QMQPAddr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := pf.WaitFor(t, token, 1, 30*time.Second)[0]
	if !bytes.Equal(testpeer.Body(got), testpeer.Body(msg)) {
		t.Fatalf("Postfix stored body %q", testpeer.Body(got))
	}
	if n := queued(t, dir); n != 0 {
		t.Fatalf("%d files left after Postfix's K", n)
	}
}
