package sendmail

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"qbox/proto/testkit/testpeer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var (
	qmailDateValue = regexp.MustCompile(`\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000`)
	qmailMessageID = regexp.MustCompile(`<\d{14}\.\d+(\.\d+)?\.qmail@`)
)

// TestGoldenSpoolFiles runs the sendmail binary on each testdata/golden
// NAME.in with the arguments in NAME.args (one per line) while the relay
// is down, and compares the spool files it writes (envelope lines, then
// the completed message, one file per recipient) with NAME.golden. The
// generated Date and Message-ID values are replaced by DATE and ID.
func TestGoldenSpoolFiles(t *testing.T) {
	sendmail := testpeer.Personality(t, "sendmail")
	inputs, err := filepath.Glob("testdata/golden/*.in")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		t.Run(name, func(t *testing.T) {
			msg, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			argText, err := os.ReadFile(strings.TrimSuffix(in, ".in") + ".args")
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Split(strings.TrimSuffix(string(argText), "\n"), "\n")
			env, spoolDir := mailEnv(t, testpeer.ClosedAddr(t))
			code, _, stderr := run(t, sendmail, env, string(msg), args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var parts []string
			for _, b := range spoolCopies(t, spoolDir) {
				s := qmailDateValue.ReplaceAllString(string(b), "DATE")
				parts = append(parts, qmailMessageID.ReplaceAllString(s, "<ID.qmail@"))
			}
			sort.Strings(parts) // by Return-Path, then Delivered-To
			got := strings.Join(parts, "=== next spool file ===\n")
			golden := strings.TrimSuffix(in, ".in") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("spool files differ from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
		})
	}
}
