package queue

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"qbox/proto"
	"qbox/proto/queue/spool"
	"qbox/proto/testkit/testpeer"
)

func qbox(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testpeer.Binary(t), append([]string{"queue"}, args...)...)
	cmd.Env = append(os.Environ(), "QBOX_SPOOL="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return testpeer.ExitCode(t, cmd.Run()), stdout.String(), stderr.String()
}

func enqueue(t *testing.T, sp *spool.Spool, sender, msg, lastErr string, age time.Duration, rcpts ...string) {
	t.Helper()
	if _, err := sp.EnqueueAt(proto.Envelope{Sender: sender, Recipients: rcpts}, time.Now().Add(-age), strings.NewReader(msg), int64(len(msg)), lastErr); err != nil {
		t.Fatal(err)
	}
}

var idLine = regexp.MustCompile(`(?m)^([0-9a-f]{12}) `)

// listIDs maps each message's sender to its ID, from `list`.
func listIDs(t *testing.T, dir string) map[string]string {
	t.Helper()
	code, out, stderr := qbox(t, dir, "list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	ids := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m := idLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		i := strings.Index(line, "<")
		j := strings.Index(line, ">")
		ids[line[i+1:j]] = m[1]
	}
	return ids
}

// TestQueueManagement: list, --json, show, hold, release, delete and
// check on a queue of a deferred message with two recipients, a fresh
// one, a held one and a broken file. A held message is not flushed.
func TestQueueManagement(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, sp, "deferred@example.test", "Subject: deferred\n\nd\n", "qmqp: connection refused", 3*time.Hour, "a@example.test", "b@example.test")
	enqueue(t, sp, "fresh@example.test", "Subject: fresh\n\nf\n", "", time.Minute, "c@example.test")
	enqueue(t, sp, "held@example.test", "Subject: held\n\nh\n", "Z try later", 30*time.Hour, "d@example.test")
	if err := os.WriteFile(filepath.Join(dir, "new", "broken"), []byte("no envelope here\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ids := listIDs(t, dir)
	if len(ids) != 3 {
		t.Fatalf("list shows %d messages, want 3: %v", len(ids), ids)
	}
	// The ID is stable: the same on a second listing.
	if again := listIDs(t, dir); again["deferred@example.test"] != ids["deferred@example.test"] {
		t.Errorf("ID changed between listings: %v then %v", ids, again)
	}
	code, out, _ := qbox(t, dir, "hold", ids["held@example.test"])
	if code != 0 || !strings.Contains(out, "held "+ids["held@example.test"]) {
		t.Fatalf("hold: exit %d: %s", code, out)
	}
	if l, err := sp.Messages(); err != nil || !slices.ContainsFunc(l.Messages, func(m spool.Message) bool { return m.Held }) {
		t.Fatalf("no held message after hold: %v", err)
	}

	code, out, _ = qbox(t, dir, "list")
	for _, want := range []string{
		ids["deferred@example.test"] + "    3h0m", " deferred <deferred@example.test> -> a@example.test,b@example.test  last error: qmqp: connection refused",
		" queued   <fresh@example.test> -> c@example.test",
		" held     <held@example.test> -> d@example.test  last error: Z try later",
		"broken", "no envelope",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("list lacks %q (exit %d):\n%s", want, code, out)
		}
	}

	code, out, _ = qbox(t, dir, "list", "--json")
	var parsed jsonList
	if err := json.Unmarshal([]byte(out), &parsed); code != 0 || err != nil {
		t.Fatalf("list --json: exit %d, %v:\n%s", code, err, out)
	}
	states := map[string]string{}
	for _, m := range parsed.Messages {
		states[m.Sender] = m.State
		if m.Sender == "deferred@example.test" && (len(m.Recipients) != 2 || m.AgeSeconds < 3*3600 || m.LastError == "" || len(m.Files) != 1) {
			t.Errorf("deferred message in JSON: %+v", m)
		}
	}
	if states["deferred@example.test"] != "deferred" || states["fresh@example.test"] != "queued" || states["held@example.test"] != "held" || len(parsed.Malformed) != 1 {
		t.Errorf("JSON states %v, %d malformed", states, len(parsed.Malformed))
	}

	code, out, _ = qbox(t, dir, "show", ids["deferred@example.test"][:6])
	for _, want := range []string{"State: deferred", "Sender: <deferred@example.test>", "Recipient: <a@example.test>", "Recipient: <b@example.test>",
		"Last error: qmqp: connection refused", "\n\nSubject: deferred\n\nd\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("show lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	if code, _, stderr := qbox(t, dir, "show", "ffffffffffff"); code != 100 || !strings.Contains(stderr, "no queued message") {
		t.Errorf("show of an unknown ID: exit %d, %q", code, stderr)
	}

	// The flush leaves the held message alone.
	res, _, err := sp.Queued()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res {
		if e.Message.Sender == "held@example.test" {
			t.Errorf("a held message is where the flush sends from: %s", e.Message.ID)
		}
	}

	// check: the 30-hour-old message is held, so the oldest is 3 hours.
	for _, c := range []struct {
		args []string
		code int
		word string
	}{
		{[]string{"--warn-age", "4h", "--crit-age", "1d"}, 0, "QUEUE OK"},
		{[]string{"--warn-age", "2h", "--crit-age", "1d"}, 1, "QUEUE WARNING"},
		{[]string{"--warn-age", "1h", "--crit-age", "2h"}, 2, "QUEUE CRITICAL"},
		{[]string{"--warn-age", "4h", "--crit-age", "1d", "--warn-count", "1", "--crit-count", "5"}, 1, "QUEUE WARNING"},
		{[]string{"--warn-age", "4h", "--crit-age", "1d", "--warn-count", "0", "--crit-count", "1"}, 2, "QUEUE CRITICAL"},
	} {
		// The broken file makes every result at least a WARNING; delete
		// it for the OK case.
		if c.code == 0 {
			os.Remove(filepath.Join(dir, "new", "broken"))
		}
		code, out, _ := qbox(t, dir, append([]string{"check"}, c.args...)...)
		if code != c.code || !strings.HasPrefix(out, c.word+" - 2 message(s) queued, oldest 3h0m, 1 held") || strings.Count(out, "\n") != 1 {
			t.Errorf("check %v: exit %d, %q; want %d and %s", c.args, code, out, c.code, c.word)
		}
		if !regexp.MustCompile(` \| messages=2;[0-9]*;[0-9]*;0 oldest=108[0-9][0-9]s;[0-9]+;[0-9]+;0 held=1;;;0 malformed=[01];;;0\n$`).MatchString(out) {
			t.Errorf("check %v: perfdata in %q", c.args, out)
		}
	}
	if code, out, _ := qbox(t, filepath.Join(t.TempDir(), "nothing-here"), "check", "--warn-age", "1h", "--crit-age", "2h"); code != 0 || !strings.HasPrefix(out, "QUEUE OK - 0 message(s)") {
		t.Errorf("check of an empty queue: exit %d, %q", code, out)
	}
	notADir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notADir, nil, 0o600)
	if code, out, _ := qbox(t, notADir, "check", "--warn-age", "1h", "--crit-age", "2h"); code != 3 || !strings.HasPrefix(out, "QUEUE UNKNOWN - ") {
		t.Errorf("check of an unreadable queue: exit %d, %q; want 3", code, out)
	}

	code, out, _ = qbox(t, dir, "release", ids["held@example.test"])
	if code != 0 || !strings.Contains(out, "released") {
		t.Fatalf("release: exit %d: %s", code, out)
	}
	res, _, _ = sp.Queued()
	found := false
	for _, e := range res {
		found = found || e.Message.Sender == "held@example.test"
	}
	if !found {
		t.Errorf("released message not back for the flush")
	}
	if text := res[0].LastError; text == "" {
		t.Errorf("the oldest message lost its last error on hold and release")
	}

	code, out, _ = qbox(t, dir, "delete", ids["deferred@example.test"], ids["fresh@example.test"])
	if code != 0 || strings.Count(out, "deleted ") != 2 {
		t.Fatalf("delete: exit %d: %s", code, out)
	}
	if left := listIDs(t, dir); len(left) != 1 || left["held@example.test"] == "" {
		t.Errorf("after delete: %v", left)
	}
	if code, _, stderr := qbox(t, dir, "delete", "abc"); code != 100 || !strings.Contains(stderr, "too short") {
		t.Errorf("delete of a 3-character ID: exit %d, %q", code, stderr)
	}
	// An error names the command as typed (issue 22), once.
	for _, sub := range []string{"delete", "hold", "release", "show"} {
		code, _, stderr := qbox(t, dir, sub, "nosuchmessage")
		if code != 100 || !strings.HasPrefix(stderr, "qbox queue "+sub+": ") || strings.Count(stderr, "qbox") != 1 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s of an unknown ID: exit %d, stderr %q; want 100 and one line beginning 'qbox queue %s: '", sub, code, stderr, sub)
		}
	}
}
