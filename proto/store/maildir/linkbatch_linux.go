package maildir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// linkBatch is Batch's durable write without tmp/: each file is an
// unnamed O_TMPFILE inode in new/, written and fsync'd, then given its name
// in new/ with linkat, and new/ is fsync'd once for the batch. A file is
// never visible before it is complete, and a crash leaves no name behind
// at all (the kernel frees unnamed inodes). Creating names in tmp/ and
// renaming them out serialises concurrent deliveries on tmp/'s directory
// lock (held while ext4 allocates the inode); unnamed inodes do not take
// it, which under concurrent load measured up to half again Batch's
// deliveries per second.
//
// An unnamed file lives only while it is open, so a batch of more than
// MaxOpenFiles parks its older files: named in tmp/ and closed, then at
// Commit opened again one at a time to be fsync'd, and renamed into new/
// as Batch does. The common message, to a few recipients, never touches
// tmp/.
type linkBatch struct {
	dir     string
	files   []*os.File // open, unnamed
	parked  []string   // names in tmp/ of the files already closed
	names   []string   // linked or renamed into new/ so far
	done    bool       // Sync, Commit or Abort was called
	written bool       // Written was called: Sync may follow
	linked  bool       // Link or Abort was called, or Sync failed
}

// oTmpfile is O_TMPFILE: __O_TMPFILE (0x400000 on every architecture Go
// runs Linux on) with that architecture's O_DIRECTORY.
const oTmpfile = 0x400000 | syscall.O_DIRECTORY

// tmpfileUnsupported is set once the file system says it has no
// O_TMPFILE; from then on the store uses Batch.
var tmpfileUnsupported atomic.Bool

// newFileBatch returns a linkBatch where O_TMPFILE works, else a Batch.
func newFileBatch(dir string) fileBatch {
	if tmpfileUnsupported.Load() {
		return NewBatch(dir)
	}
	return &linkBatch{dir: dir}
}

func (b *linkBatch) Create() (*os.File, error) {
	for len(b.files) >= MaxOpenFiles {
		if err := b.park(); err != nil {
			return nil, err
		}
	}
	fd, err := syscall.Open(filepath.Join(b.dir, "new"), oTmpfile|syscall.O_RDWR|syscall.O_CLOEXEC, 0600)
	if err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EINVAL) {
			tmpfileUnsupported.Store(true)
			return nil, errTmpfileUnsupported
		}
		return nil, fmt.Errorf("maildir: create in %s: %w", b.dir, err)
	}
	f := os.NewFile(uintptr(fd), "tmpfile")
	b.files = append(b.files, f)
	return f, nil
}

// park names the oldest open file in tmp/ and closes it.
func (b *linkBatch) park() error {
	f := b.files[0]
	key := NewKey()
	if err := linkFD(f, filepath.Join(b.dir, "tmp", key)); err != nil {
		return fmt.Errorf("maildir: link into tmp/: %w", err)
	}
	b.parked = append(b.parked, key)
	f.Close()
	b.files = b.files[1:]
	return nil
}

func (b *linkBatch) Commit() ([]string, error) {
	return commitAlone(b, b.dir)
}

// Sync fsyncs every file, the parked ones opened again one at a time. On
// an error the batch is finished: its files closed, nothing left in tmp/.
func (b *linkBatch) Sync() error {
	if b.done {
		return errors.New("maildir: batch already finished")
	}
	b.done = true
	for _, key := range b.parked {
		if err := syncPath(filepath.Join(b.dir, "tmp", key)); err != nil {
			b.Abort()
			return err
		}
	}
	for _, f := range b.files {
		if err := f.Sync(); err != nil {
			b.Abort()
			return fmt.Errorf("maildir: fsync: %w", err)
		}
	}
	return nil
}

// Written is Sync without the fsyncs, for a caller that makes the files
// durable itself (one syncfs(2) for a group): the files stay open, to be
// linked.
func (b *linkBatch) Written() error {
	if b.done {
		return errors.New("maildir: batch already finished")
	}
	b.written = true
	return nil
}

// Link gives every file, already Sync'd, its name in new/ (the parked
// ones renamed from tmp/) and closes them. On an error no name of the
// batch is left in new/ or tmp/.
func (b *linkBatch) Link() ([]string, error) {
	if !(b.done || b.written) || b.linked {
		return nil, errors.New("maildir: Link without a successful Sync or Written")
	}
	b.linked = true
	defer b.closeAll()
	newDir := filepath.Join(b.dir, "new")
	for _, key := range b.parked {
		dst := filepath.Join(newDir, key)
		if err := os.Rename(filepath.Join(b.dir, "tmp", key), dst); err != nil {
			b.Unlink()
			return nil, fmt.Errorf("maildir: %w", err)
		}
		b.names = append(b.names, dst)
	}
	for _, f := range b.files {
		dst := filepath.Join(newDir, NewKey())
		if err := linkFD(f, dst); err != nil {
			b.Unlink()
			return nil, fmt.Errorf("maildir: link into new/: %w", err)
		}
		b.names = append(b.names, dst)
	}
	return b.names, nil
}

// Abort discards every file not yet in new/: a no-op after Link (or
// Commit).
func (b *linkBatch) Abort() {
	if b.linked {
		return
	}
	b.done, b.linked = true, true
	b.closeAll() // unnamed: closing frees them
	b.removeParked()
}

func (b *linkBatch) closeAll() {
	for _, f := range b.files {
		f.Close()
	}
	b.files = nil
}

// Unlink removes every name the batch gave, in new/ and in tmp/: Link's
// undo when the fsync of new/ failed.
func (b *linkBatch) Unlink() {
	for _, n := range b.names {
		os.Remove(n)
	}
	b.names = nil
	b.removeParked()
}

func (b *linkBatch) removeParked() {
	for _, key := range b.parked {
		os.Remove(filepath.Join(b.dir, "tmp", key)) // already renamed: no such file
	}
}

// linkFD gives the open unnamed file f the name dst: linkat with
// AT_SYMLINK_FOLLOW on its /proc/self/fd entry (AT_EMPTY_PATH would need
// CAP_DAC_READ_SEARCH).
func linkFD(f *os.File, dst string) error {
	src, err := syscall.BytePtrFromString("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return err
	}
	to, err := syscall.BytePtrFromString(dst)
	if err != nil {
		return err
	}
	const atFDCWD, atSymlinkFollow = -100, 0x400
	cwd := atFDCWD
	_, _, errno := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(cwd), uintptr(unsafe.Pointer(src)),
		uintptr(cwd), uintptr(unsafe.Pointer(to)), atSymlinkFollow, 0)
	if errno != 0 {
		return &os.LinkError{Op: "linkat", Old: f.Name(), New: dst, Err: errno}
	}
	return nil
}
