package spool

// A user's own drops. The maildrop is not listable (only root may read
// it: its files are every user's), so a user could not see the mail they
// dropped while the hub was down. Submit notes each drop file's name in
// the user's ~/.qbox/dropped; MyDrops reads the names back and looks each
// one up in the maildrop by name, which the directory's search bit
// allows: what is still there still waits for root's pickup. The note is
// best effort: a user whose home is not writable (www-data) has none.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// MyDrop is one of the caller's drop files still waiting in the maildrop.
type MyDrop struct {
	Name string    // the drop file's name in the maildrop
	Size int64     // its size, envelope included
	Time time.Time // when it was dropped
}

// maxNoted bounds the names a note keeps (and reads): a user with more
// waiting drops than this sees the newest.
const maxNoted = 1000

// dropNote is the caller's note of their drops, or "" for root (who may
// list the maildrop) and a caller without $HOME (no guess at a home the
// environment does not name: a test's getenv writes nowhere).
func dropNote(getenv func(string) string) string {
	home := getenv("HOME")
	if os.Geteuid() == 0 || home == "" {
		return ""
	}
	return filepath.Join(home, ".qbox", "dropped")
}

// noteDrops adds the drop files at paths to the caller's note, keeping
// the names still waiting in q's maildrop. Failures are ignored: the
// mail is safe, only the user's view of it is lost.
func noteDrops(getenv func(string) string, q SystemQueue, paths []string) {
	note := dropNote(getenv)
	if note == "" {
		return
	}
	var names []string
	for _, d := range MyDrops(getenv, q) {
		names = append(names, d.Name)
	}
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	if len(names) > maxNoted {
		names = names[len(names)-maxNoted:]
	}
	var b bytes.Buffer
	for _, n := range names {
		b.WriteString(n + "\n")
	}
	if err := os.MkdirAll(filepath.Dir(note), 0o700); err != nil {
		return
	}
	tmp := note + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	_, err = f.Write(b.Bytes())
	if cerr := f.Close(); err == nil && cerr == nil {
		os.Rename(tmp, note)
		return
	}
	os.Remove(tmp)
}

// MyDrops returns the caller's drop files still waiting in q's maildrop,
// as their note names them (none for root, who lists the maildrop
// itself). Only a name a drop file can have is looked up, and only a
// regular file the caller owns counts.
func MyDrops(getenv func(string) string, q SystemQueue) []MyDrop {
	note := dropNote(getenv)
	if note == "" {
		return nil
	}
	f, err := os.OpenFile(note, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	var drops []MyDrop
	sc := bufio.NewScanner(f)
	for n := 0; sc.Scan() && n < maxNoted; n++ {
		name := sc.Text()
		if _, err := hex.DecodeString(name); err != nil || len(name) != 32 {
			continue // not a drop file's name
		}
		st, err := os.Lstat(filepath.Join(q.DropDir(), name))
		if err != nil || !st.Mode().IsRegular() {
			continue // picked up (or never there)
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Geteuid() {
			continue
		}
		drops = append(drops, MyDrop{Name: name, Size: st.Size(), Time: st.ModTime()})
	}
	return drops
}
