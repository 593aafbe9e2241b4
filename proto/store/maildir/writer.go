// Package maildir writes files into a maildir durably: a file appears in
// new/ only after its data and the directory entry are on disk. go-maildir
// creates the layout; its Delivery does not fsync, so writing is done here.
package maildir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomaildir "github.com/emersion/go-maildir"
)

// Init creates dir with tmp/, new/ and cur/ (mode 0700) if missing, and
// makes what it created durable (see MkdirDurable): a K given into a new/
// that a power cut could take away would be a K for nothing.
func Init(dir string) error {
	return MkdirDurable(dir, func() error { return gomaildir.Dir(dir).Init() })
}

// MkdirDurable runs mkdirs, which creates dir (and parents of it, if
// missing) and directories inside dir, then fsyncs dir and the parent of
// every directory it created, so each new directory entry survives a
// power cut: a directory's fsync makes its own entries durable, not its
// name in its parent (Linux fsync(2)). A parent it may not open is made
// durable with syncfs(2) instead. Nothing is synced when dir existed and
// mkdirs added nothing to it.
func MkdirDurable(dir string, mkdirs func() error) error {
	dir = filepath.Clean(dir)
	// The topmost directory that does not exist yet.
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	before := -1
	if top == "" {
		if des, err := os.ReadDir(dir); err == nil {
			before = len(des)
		}
	}
	if err := mkdirs(); err != nil {
		return err
	}
	if top == "" {
		if des, err := os.ReadDir(dir); err == nil && len(des) == before {
			return nil // nothing new
		}
		return SyncDir(dir)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if err := SyncDir(d); err != nil {
			return err
		}
		if d == top {
			// A parent this process may write but not read (mode 0300)
			// cannot be opened to be fsync'd: sync its file system.
			err := SyncDir(filepath.Dir(d))
			if os.IsPermission(err) {
				err = syncFS(d)
			}
			return err
		}
	}
}

var (
	counter atomic.Uint64
	// keyPid is this process's ID, asked once: os.Getpid is a system
	// call.
	keyPid = sync.OnceValue(func() string { return strconv.Itoa(os.Getpid()) })
	// keyHost is the host part of a maildir name, looked up at the first
	// key rather than at start-up: every sendmail call links this package,
	// few of them name a maildir file.
	keyHost = sync.OnceValue(func() string {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		// '/' and ':' may not appear in a maildir name.
		return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
	})
)

// NewKey returns a unique maildir file name: seconds, then a part unique
// to this process and delivery, then the host (the classic layout).
func NewKey() string {
	var rnd [6]byte
	rand.Read(rnd[:])
	return strconv.FormatInt(time.Now().Unix(), 10) + ".P" + keyPid() +
		"Q" + strconv.FormatUint(counter.Add(1), 10) + "R" + hex.EncodeToString(rnd[:]) + "." + keyHost()
}

// MaxOpenFiles is the most files a batch holds open at once, whatever
// its number of recipients: a message to 10,000 recipients is stored under
// `ulimit -n 64` too. Older files are closed as new ones are created and
// opened again, one at a time, to be fsync'd at Commit: all are written
// before the first fsync, which on ext4 commits most of them at once. The
// batch still becomes visible in new/ only as a whole.
const MaxOpenFiles = 4

// Batch writes a group of files (one per recipient of a message) into a
// maildir and makes them durable together: every file is fsync'd, all are
// renamed into new/, and new/ is fsync'd once for the whole batch. At most
// MaxOpenFiles of them are open at a time.
type Batch struct {
	dir     string
	open    []*os.File // the newest files, still open; the others are closed
	keys    []string   // every file's name in tmp/
	paths   []string   // the names Link gave in new/
	err     error      // closing an older file failed
	done    bool       // Sync (or Commit, or Abort) was called
	written bool       // Written or Sync closed every file
	linked  bool       // Link (or Abort) was called
}

// NewBatch starts a batch for the maildir dir (which must exist).
func NewBatch(dir string) *Batch { return &Batch{dir: dir} }

// Create opens a new file in tmp/ for the caller to write. The caller is
// done with every file it got before.
func (b *Batch) Create() (*os.File, error) {
	if b.err != nil {
		return nil, b.err
	}
	for len(b.open) >= MaxOpenFiles {
		if err := b.open[0].Close(); err != nil {
			b.err = fmt.Errorf("maildir: close %s: %w", b.open[0].Name(), err)
			return nil, b.err
		}
		b.open = b.open[1:]
	}
	key := NewKey()
	f, err := os.OpenFile(filepath.Join(b.dir, "tmp", key), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0600)
	if err != nil {
		return nil, err
	}
	b.open = append(b.open, f)
	b.keys = append(b.keys, key)
	return f, nil
}

// syncPath opens a closed file of the batch again, fsyncs and closes it.
func syncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("maildir: fsync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("maildir: fsync %s: %w", path, err)
	}
	return nil
}

// Commit makes every file durable and moves it into new/. It returns the
// paths in new/. On any error, nothing of the batch is left in new/ or
// tmp/, so a caller that answers Z never leaves a copy behind that a later
// retry would duplicate.
func (b *Batch) Commit() ([]string, error) {
	return commitAlone(b, b.dir)
}

// commitAlone is a batch's whole commit without a group: Sync, Link and
// the fsync of new/, Unlink on any failure.
func commitAlone(b fileBatch, dir string) ([]string, error) {
	if err := b.Sync(); err != nil {
		return nil, err
	}
	paths, err := b.Link()
	if err == nil {
		err = SyncDir(filepath.Join(dir, "new"))
	}
	if err != nil {
		b.Unlink()
		return nil, err
	}
	return paths, nil
}

// Sync is the first step of Commit: every file fsync'd and closed. On an
// error the batch is finished and nothing of it is left in tmp/.
func (b *Batch) Sync() error { return b.finish(true) }

// Written is Sync without the fsyncs, for a caller that makes the files
// durable itself (one syncfs(2) for a group).
func (b *Batch) Written() error { return b.finish(false) }

func (b *Batch) finish(fsync bool) error {
	if b.done {
		return errors.New("maildir: batch already finished")
	}
	b.done = fsync // Written may be followed by Sync
	err := b.err
	closed := len(b.keys) - len(b.open)
	for _, key := range b.keys[:closed] {
		if err == nil && fsync {
			err = syncPath(filepath.Join(b.dir, "tmp", key))
		}
	}
	for _, f := range b.open {
		if fsync {
			if e := f.Sync(); e != nil && err == nil {
				err = fmt.Errorf("maildir: fsync %s: %w", f.Name(), e)
			}
		}
		if e := f.Close(); e != nil && err == nil {
			err = fmt.Errorf("maildir: close %s: %w", f.Name(), e)
		}
	}
	b.open, b.written = nil, true
	if err != nil {
		b.removeTmp()
		b.keys, b.done, b.linked = nil, true, true // nothing left to link or abort
	}
	return err
}

// Link is the second step of Commit, after Sync: every file renamed into
// new/, which the caller then fsyncs (once for any number of batches).
// It returns the paths in new/; on an error, none is left there.
func (b *Batch) Link() ([]string, error) {
	if !b.written || b.linked {
		return nil, errors.New("maildir: Link without a successful Sync or Written")
	}
	b.linked = true
	paths := make([]string, 0, len(b.keys))
	for _, key := range b.keys {
		dst := filepath.Join(b.dir, "new", key)
		if err := os.Rename(filepath.Join(b.dir, "tmp", key), dst); err != nil {
			b.paths = paths
			b.Unlink()
			return nil, fmt.Errorf("maildir: %w", err)
		}
		paths = append(paths, dst)
	}
	b.paths = paths
	return paths, nil
}

// Unlink undoes Link when the fsync of new/ failed: every name it gave
// in new/ (and any left in tmp/) is removed, so a Z leaves no copy.
func (b *Batch) Unlink() {
	for _, p := range b.paths {
		os.Remove(p)
	}
	b.paths = nil
	b.removeTmp()
}

// Abort closes and removes every file of the batch not yet in new/: a
// no-op after Link (or Commit).
func (b *Batch) Abort() {
	if b.linked {
		return
	}
	b.done, b.linked = true, true
	for _, f := range b.open {
		f.Close()
	}
	b.open = nil
	b.removeTmp()
	b.keys = nil
}

func (b *Batch) removeTmp() {
	for _, key := range b.keys {
		os.Remove(filepath.Join(b.dir, "tmp", key))
	}
}

// SyncDir fsyncs a directory, making renames and unlinks in it durable.
// It works on the bare descriptor: an os.File would also try to register
// it with the network poller, two more system calls for every group.
func SyncDir(dir string) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer syscall.Close(fd)
	if err := syscall.Fsync(fd); err != nil {
		return fmt.Errorf("maildir: fsync %s: %w", dir, err)
	}
	return nil
}
