package crashfs

import (
	"os"
	"path/filepath"
	"testing"
)

// logOf builds a log over a base of root (1) with tmp/ (2) and new/ (3).
func logOf(ops ...Op) *Log {
	base := newState()
	base.root = 1
	base.inodes[1] = &inode{kind: 'd', entries: map[string]int{"tmp": 2, "new": 3}}
	base.inodes[1].durable = cloneMap(base.inodes[1].entries)
	for _, n := range []int{2, 3} {
		base.inodes[n] = &inode{kind: 'd', entries: map[string]int{}, durable: map[string]int{}}
	}
	return &Log{base: base, Ops: ops}
}

// The maildir delivery: create in tmp/, write, fsync, rename to new/,
// fsync new/.
var delivery = []Op{
	{Kind: OpCreate, Dir: 2, Name: "m", Ino: 10},
	{Kind: OpWrite, Ino: 10, Data: []byte("hello ")},
	{Kind: OpWrite, Ino: 10, Off: 6, Data: []byte("world")},
	{Kind: OpFsync, Ino: 10},
	{Kind: OpRename, Dir: 2, Name: "m", Dir2: 3, Name2: "m"},
	{Kind: OpFsyncDir, Ino: 3},
}

func contents(t *testing.T, img *Image, dir string) map[string]string {
	t.Helper()
	names, err := img.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		b, err := img.ReadFile(dir + "/" + n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}

func TestModelDelivery(t *testing.T) {
	l := logOf(delivery...)
	for _, c := range []struct {
		k        int
		m        Model
		tmp, new map[string]string
	}{
		{3, POSIX, map[string]string{}, map[string]string{}},
		{5, POSIX, map[string]string{}, map[string]string{}},
		{6, POSIX, map[string]string{}, map[string]string{"m": "hello world"}},
		{3, TailDropped, map[string]string{"m": ""}, map[string]string{}},
		{4, TailDropped, map[string]string{"m": "hello world"}, map[string]string{}},
		{2, TailDropped, map[string]string{"m": ""}, map[string]string{}},
		{5, EntriesDropped, map[string]string{}, map[string]string{}},
		{6, EntriesDropped, map[string]string{}, map[string]string{"m": "hello world"}},
		{3, ProcessCrash, map[string]string{"m": "hello world"}, map[string]string{}},
	} {
		img, err := l.Image(c.k, c.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := contents(t, img, "tmp"); !same(got, c.tmp) {
			t.Errorf("cut %d %s: tmp/ = %q, want %q", c.k, c.m.Name, got, c.tmp)
		}
		if got := contents(t, img, "new"); !same(got, c.new) {
			t.Errorf("cut %d %s: new/ = %q, want %q", c.k, c.m.Name, got, c.new)
		}
	}
}

// Without the file's fsync, a cut after new/'s fsync keeps the name and
// loses the data: a torn (here empty) file in new/.
func TestModelMissingFileFsyncIsTorn(t *testing.T) {
	ops := append([]Op(nil), delivery[:3]...)
	ops = append(ops, delivery[4:]...)
	img, err := logOf(ops...).Image(len(ops), POSIX)
	if err != nil {
		t.Fatal(err)
	}
	if got := contents(t, img, "new"); got["m"] != "" || len(got) != 1 {
		t.Fatalf("new/ = %q, want m empty", got)
	}
}

// A rename between two directories with only the target fsync'd keeps
// the file under both names; an unlink not fsync'd is undone.
func TestModelRenameBothNames(t *testing.T) {
	ops := []Op{
		{Kind: OpCreate, Dir: 2, Name: "m", Ino: 10},
		{Kind: OpFsyncDir, Ino: 2},
		{Kind: OpRename, Dir: 2, Name: "m", Dir2: 3, Name2: "m"},
		{Kind: OpFsyncDir, Ino: 3},
		{Kind: OpUnlink, Dir: 3, Name: "m"},
	}
	img, err := logOf(ops...).Image(len(ops), POSIX)
	if err != nil {
		t.Fatal(err)
	}
	if tmp, new := contents(t, img, "tmp"), contents(t, img, "new"); len(tmp) != 1 || len(new) != 1 {
		t.Fatalf("tmp/ = %q, new/ = %q: want m in both", tmp, new)
	}
	dir := t.TempDir()
	if err := img.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tmp/m", "new/m"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
}

// An O_TMPFILE linked into new/ after its fsync, then new/ fsync'd.
func TestModelTmpfileLink(t *testing.T) {
	ops := []Op{
		{Kind: OpTmpfile, Ino: 10},
		{Kind: OpWrite, Ino: 10, Data: []byte("x")},
		{Kind: OpFdatasync, Ino: 10},
		{Kind: OpLink, Dir: 3, Name: "m", Ino: 10},
		{Kind: OpFsyncDir, Ino: 3},
		{Kind: OpTruncate, Ino: 10, Off: 0},
	}
	l := logOf(ops...)
	var seen []int
	err := l.Images(l.SyncPoints(), []Model{POSIX}, func(k int, img *Image) error {
		seen = append(seen, k)
		got := contents(t, img, "new")
		if want := k >= 5; want != (got["m"] == "x") {
			t.Errorf("cut %d: new/ = %q", k, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 4 { // 0, 3, 5, 6
		t.Errorf("sync points %v", seen)
	}
}

func same(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
