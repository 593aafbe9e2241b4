package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/proto"
)

// wantUnsafe checks that Open refuses dir, naming it and the problem, and
// that nothing was queued into it through the refused spool.
func wantUnsafe(t *testing.T, dir, named, problem string) {
	t.Helper()
	s, err := Open(dir)
	if err == nil {
		if _, err := s.Enqueue(proto.Envelope{Sender: "a@x.test", Recipients: []string{"b@y.test"}}, strings.NewReader("x\n"), 2, ""); err == nil {
			t.Errorf("Open(%s) succeeded and a message was queued there", dir)
		}
		return
	}
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), named) || !strings.Contains(err.Error(), problem) {
		t.Errorf("Open(%s): %v; want ErrUnsafe naming %s and %q", dir, err, named, problem)
	}
	if err := Check(dir); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Check(%s): %v, want ErrUnsafe", dir, err)
	}
	var out bytes.Buffer
	if _, err := (&Spool{Dir: dir}).WriteListing(&out, time.Now()); !errors.Is(err, ErrUnsafe) {
		t.Errorf("listing %s: %v, want ErrUnsafe; printed %q", dir, err, out.String())
	}
	for _, sub := range []string{"new", "cur", "tmp"} {
		if names, _ := os.ReadDir(filepath.Join(dir, sub)); len(names) > 0 {
			t.Errorf("%s/%s holds %d files after a refused Open", dir, sub, len(names))
		}
	}
}

func TestOpenRefusesWorldWritableSpool(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, os.ModeSticky | 0o777} {
		dir := filepath.Join(t.TempDir(), "spool")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		wantUnsafe(t, dir, dir, "writable by group or others")
		if st, _ := os.Stat(dir); st.Mode()&os.ModePerm != mode&os.ModePerm {
			t.Errorf("mode %v changed to %v by a refused Open", mode, st.Mode())
		}
	}
}

func TestOpenRefusesSymlinkedSpool(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "spool")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, link, link, "symbolic link")
	// The same via $QBOX_SPOOL: Locate names it, Open refuses it.
	dir, err := Locate(func(k string) string {
		if k == "QBOX_SPOOL" {
			return link
		}
		return ""
	})
	if err != nil || dir != link {
		t.Fatalf("Locate: %q %v", dir, err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("Open($QBOX_SPOOL symlink): %v", err)
	}
	// A dangling symlink is not followed to create the spool elsewhere.
	dangling := filepath.Join(t.TempDir(), "dangling")
	target := filepath.Join(t.TempDir(), "made-by-open")
	if err := os.Symlink(target, dangling); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dangling); err == nil {
		t.Fatal("Open through a dangling symlink succeeded")
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open created the symlink's target: %v", err)
	}
}

// (Owned by another user: TestOpenRefusesSubdirectoriesOwnedByAnotherUser,
// which needs root.)
func TestOpenRefusesUnsafeSubdirectories(t *testing.T) {
	cases := map[string]func(t *testing.T, p string){
		"symbolic link": func(t *testing.T, p string) {
			os.Remove(p)
			if err := os.Symlink(t.TempDir(), p); err != nil {
				t.Fatal(err)
			}
		},
		"writable by group or others": func(t *testing.T, p string) {
			if err := os.Chmod(p, 0o777); err != nil {
				t.Fatal(err)
			}
		},
	}
	for problem, spoil := range cases {
		for _, sub := range []string{"new", "err"} {
			t.Run(problem+"/"+sub, func(t *testing.T) {
				s := openSpool(t)
				p := filepath.Join(s.Dir, sub)
				spoil(t, p)
				wantUnsafe(t, s.Dir, p, problem)
			})
		}
	}
}

func TestOpenAcceptsOwnSpool(t *testing.T) {
	// Inside a sticky world-writable directory (as /tmp) is fine: others
	// cannot rename what is ours there.
	sticky := filepath.Join(t.TempDir(), "sticky")
	if err := os.Mkdir(sticky, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(sticky, "spool")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Readable by others is tightened, as before.
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", st.Mode().Perm())
	}
	enqueue(t, s, "a@x.test", "x\n", "b@y.test")
	var out bytes.Buffer
	if n, err := s.WriteListing(&out, time.Now()); err != nil || n != 1 {
		t.Fatalf("listing: %d %v\n%s", n, err, out.String())
	}
}
