// Package testpeer starts what qbox's tests talk to, always on
// 127.0.0.1. In every build: the qbox binary itself (Binary, Personality)
// and `qbox serve` on port 0 with the addresses read from its log
// (StartServe), and a port where connecting is refused (ClosedAddr); these
// need no root and no peer, and plain `go test ./...` uses them.
//
// With the build tag peers only (peers.go; `make test` runs the tests so,
// as root): the real peers, Postfix (qmqpd, smtpd, qmqp-sink, qmqp-source,
// smtp-source), mailfront and tcpserver, so that a test calling them from
// an untagged file does not compile. A missing peer fails the test: it is
// never skipped, because a skipped peer would report untested code as
// passing.
package testpeer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Root returns the module's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds qbox once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "qbox-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "qbox")
		// The tags of `make build`: tests run the binary that ships.
		cmd := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", buildPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Personality returns the path of a symlink called name pointing at the
// qbox binary, in a fresh directory.
func Personality(t testing.TB, name string) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(Binary(t), link); err != nil {
		t.Fatal(err)
	}
	return link
}

// Body returns what follows the first blank line of a delivered message.
func Body(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[i+2:]
	}
	return nil
}

// Token returns a string unique to this test run, to find its mail.
func Token(t testing.TB) string {
	return fmt.Sprintf("qbox-%s-%d-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), os.Getpid(), time.Now().UnixNano())
}

// ExitCode is the exit status of a command that has finished with err
// (from Run or CombinedOutput); a command that could not run at all fails
// the test.
func ExitCode(t testing.TB, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("running the command: %v", err)
	}
	return 0
}
