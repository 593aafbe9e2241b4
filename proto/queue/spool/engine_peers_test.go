//go:build peers

package spool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"qbox/proto/testkit/testpeer"
)

// The flush sendmail -q and inject --flush run (FlushQMQP, on the queue
// engine) applies the lifetime to malformed files too: one older than 14
// days is reported to postmaster@hostname over QMQP, with its contents,
// and removed; a young one stays, reported.
func TestFlushQMQPMalformedPastLifetime(t *testing.T) {
	pf := testpeer.StartPostfix(t)
	s := openSpool(t)
	tok := testpeer.Token(t)
	old := filepath.Join(s.Dir, "new", "old-garbage")
	young := filepath.Join(s.Dir, "new", "young-garbage")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("Subject: "+tok+"\n\nno envelope here\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mt := time.Now().Add(-15 * 24 * time.Hour)
	if err := os.Chtimes(old, mt, mt); err != nil {
		t.Fatal(err)
	}
	res, err := s.FlushQMQP(context.Background(), client(pf.QMQPAddr), pf.Domain, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bounced != 1 || len(res.Malformed) != 1 || res.Malformed[0].Name != "new/young-garbage" || res.Remaining() != 1 {
		t.Fatalf("result %+v, want the old file reported and the young one left", res)
	}
	if _, err := os.Lstat(old); !os.IsNotExist(err) {
		t.Errorf("the expired malformed file is still there: %v", err)
	}
	m := pf.WaitFor(t, tok, 1, 30*time.Second)[0]
	for _, want := range []string{"Delivered-To: postmaster@" + pf.Domain, "Return-Path: <#@[]>", "new/old-garbage", "no envelope here"} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("report lacks %q:\n%s", want, m)
		}
	}
}
