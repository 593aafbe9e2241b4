package crashfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a mounted crash file system.
type FS struct {
	// Dir is the mount point: the program under test works here.
	Dir string
	// Backing is the real directory the operations pass through to.
	Backing string

	mu        sync.Mutex
	base      *state
	live      *state // the volatile state now: every op applied
	ops       []Op
	byBacking map[uint64]int // backing inode number -> model inode
	next      int
	err       error // the first operation the model could not follow
	mounted   bool
}

// Mount mounts a crash file system over backing (a real directory; its
// contents now are the durable base) on a fresh directory and returns
// it. It needs root and /dev/fuse, and mounts with mount(2) itself
// (go-fuse's DirectMountStrict: no fusermount). The mount allows every
// user (allow_other) and lets the kernel check permissions
// (default_permissions), so a program run under another uid meets the
// modes it would meet on a real file system.
//
// The kernel's writeback cache is off (go-fuse never asks for it) and
// file handles offer no passthrough, so every write(2) of the program
// reaches this server, and is recorded, before it returns.
//
// The program under test must be another process: the test process
// serves the file system and must not use the mount itself. At the end
// of the test the mount is unmounted (see Unmount); register the
// program's cleanup after Mount so it is stopped (killed) first. No test
// hangs on a stuck server: a process waiting on a FUSE request dies of
// SIGKILL, a mount still busy is detached, and nothing waits for the
// server's loops.
func Mount(t testing.TB, backing string) *FS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("crashfs needs /dev/fuse: %v", err)
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		t.Fatal(err)
	}
	f := &FS{Backing: backing, Dir: t.TempDir(), byBacking: map[uint64]int{}}
	f.base, f.next, err = scanBase(backing, func(b uint64, n int) { f.byBacking[b] = n })
	if err != nil {
		t.Fatalf("crashfs: reading the base %s: %v", backing, err)
	}
	f.live = f.base.clone()

	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		t.Fatal(err)
	}
	lr := &fs.LoopbackRoot{Path: backing, Dev: st.Dev}
	root := &node{LoopbackNode: &fs.LoopbackNode{RootData: lr}, fs: f}
	lr.RootNode = root
	server, err := fs.Mount(f.Dir, root, &fs.Options{
		RootStableAttr: &fs.StableAttr{Ino: st.Ino},
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            "crashfs:" + backing,
			Name:              "crashfs",
		},
	})
	if err != nil {
		t.Fatalf("crashfs: mount on %s: %v", f.Dir, err)
	}
	_ = server // its loops end when the kernel drops the connection
	f.mounted = true
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("crashfs: %v", err)
		}
	})
	return f
}

// Unmount unmounts the file system; the record stays. A mount still in
// use (a process the test left behind) is detached instead: it leaves
// the directory tree at once and goes when its last user does. It never
// waits for the server's loops: they end when the kernel drops the
// connection, which a copy of the mount in another mount namespace (a
// process that ran unshare -m meanwhile) can delay indefinitely. Safe to
// call more than once.
func (f *FS) Unmount() error {
	f.mu.Lock()
	was := f.mounted
	f.mounted = false
	f.mu.Unlock()
	if !was {
		return nil
	}
	err := syscall.Unmount(f.Dir, 0)
	if err == nil {
		return nil
	}
	if err2 := syscall.Unmount(f.Dir, syscall.MNT_DETACH); err2 != nil {
		return fmt.Errorf("unmount %s: %v; detach: %v", f.Dir, err, err2)
	}
	return nil
}

// Ops is the number of operations recorded so far. A client that reads
// a reply notes Ops at that moment: every operation the server finished
// before sending the reply is counted, so a cut at or after that number
// must keep what the reply promised.
func (f *FS) Ops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ops)
}

// Log returns a copy of the record so far (the operations' data is
// shared, never changed), or the first error met while recording.
func (f *FS) Log() (*Log, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &Log{base: f.base, Ops: append([]Op(nil), f.ops...)}, nil
}

// record appends an operation (f.mu held) and applies it to the live
// state.
func (f *FS) record(o Op) {
	if err := f.live.apply(o); err != nil && f.err == nil {
		f.err = fmt.Errorf("recording operation %d (%v): %w", len(f.ops), o, err)
	}
	f.ops = append(f.ops, o)
}

// newIno numbers a new inode whose backing inode number is b (f.mu
// held); a reused backing number now means this inode.
func (f *FS) newIno(b uint64) int {
	n := f.next
	f.next++
	f.byBacking[b] = n
	return n
}

// ino is the model inode of a node (f.mu held).
func (f *FS) ino(n *fs.Inode) int {
	id, ok := f.byBacking[n.StableAttr().Ino]
	if !ok && f.err == nil {
		f.err = fmt.Errorf("crashfs: inode %d was not created through the mount", n.StableAttr().Ino)
	}
	return id
}

// node is a loopback node that records what it changes. Every change is
// made and recorded under FS.mu, so the record's order is the order the
// backing file system saw, and an operation is recorded before its reply
// reaches the program.
type node struct {
	*fs.LoopbackNode
	fs *FS

	tmpMu sync.Mutex
	tmpfd int // an O_TMPFILE's descriptor until it is linked (+1; 0: none)
}

// WrapChild makes every node the loopback creates a recording one.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, fs: n.fs}
	}
	return ops
}

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	dir := f.ino(n.EmbeddedInode())
	b := ch.StableAttr().Ino
	if old, ok := f.live.inodes[dir].entries[name]; ok && f.byBacking[b] == old {
		// An existing file opened with O_CREAT.
		if flags&syscall.O_TRUNC != 0 {
			f.record(Op{Kind: OpTruncate, Ino: old})
		}
	} else {
		f.record(Op{Kind: OpCreate, Dir: dir, Name: name, Ino: f.newIno(b)})
	}
	return ch, &handle{inner: fh}, fl, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		f.record(Op{Kind: OpMkdir, Dir: f.ino(n.EmbeddedInode()), Name: name, Ino: f.newIno(ch.StableAttr().Ino)})
	}
	return ch, errno
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno == 0 {
		f.record(Op{Kind: OpSymlink, Dir: f.ino(n.EmbeddedInode()), Name: name, Ino: f.newIno(ch.StableAttr().Ino), Data: []byte(target)})
	}
	return ch, errno
}

// Mknod is refused: device files and FIFOs are not modelled.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, fh, fl, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	// Keep a descriptor of our own: LINK names the inode only by its
	// node, and the loopback has no path to link it from.
	pfd, ok := fh.(interface{ PassthroughFd() (int, bool) })
	if !ok {
		fh.(fs.FileReleaser).Release(ctx)
		return nil, nil, 0, syscall.EOPNOTSUPP
	}
	fd, _ := pfd.PassthroughFd()
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		fh.(fs.FileReleaser).Release(ctx)
		return nil, nil, 0, fs.ToErrno(err)
	}
	if c, ok := ctx.(*fuse.Context); ok {
		unix.Fchown(dup, int(c.Uid), int(c.Gid)) // as a file made by the caller
	}
	child := ch.Operations().(*node)
	child.tmpMu.Lock()
	child.tmpfd = dup + 1
	child.tmpMu.Unlock()
	f.record(Op{Kind: OpTmpfile, Ino: f.newIno(ch.StableAttr().Ino)})
	return ch, &handle{inner: fh}, fl, 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	tn.tmpMu.Lock()
	tmpfd := tn.tmpfd - 1
	tn.tmpMu.Unlock()
	var ch *fs.Inode
	if tmpfd >= 0 {
		// linkat(2) of an O_TMPFILE through its /proc/self/fd entry.
		p := filepath.Join(n.backingPath(), name)
		if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(tmpfd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW); err != nil {
			return nil, fs.ToErrno(err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return nil, fs.ToErrno(err)
		}
		out.Attr.FromStat(&st)
		ch = n.NewInode(ctx, &fs.LoopbackNode{RootData: n.RootData}, tn.StableAttr())
		tn.tmpMu.Lock()
		if tn.tmpfd > 0 {
			syscall.Close(tn.tmpfd - 1)
			tn.tmpfd = 0
		}
		tn.tmpMu.Unlock()
	} else {
		var errno syscall.Errno
		ch, errno = n.LoopbackNode.Link(ctx, target, name, out)
		if errno != 0 {
			return nil, errno
		}
	}
	f.record(Op{Kind: OpLink, Dir: f.ino(n.EmbeddedInode()), Name: name, Ino: f.ino(tn.EmbeddedInode())})
	return ch, 0
}

// OnForget closes the descriptor of an O_TMPFILE never linked.
func (n *node) OnForget() {
	n.tmpMu.Lock()
	defer n.tmpMu.Unlock()
	if n.tmpfd > 0 {
		syscall.Close(n.tmpfd - 1)
		n.tmpfd = 0
	}
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, OpUnlink, n.LoopbackNode.Unlink)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, OpRmdir, n.LoopbackNode.Rmdir)
}

func (n *node) remove(name string, k Kind, op func(context.Context, string) syscall.Errno) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	errno := op(context.Background(), name)
	if errno == 0 {
		f.record(Op{Kind: k, Dir: f.ino(n.EmbeddedInode()), Name: name})
	}
	return errno
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT: not modelled
	}
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 {
		k := OpRename
		if flags&unix.RENAME_EXCHANGE != 0 {
			k = OpExchange
		}
		f.record(Op{Kind: k, Dir: f.ino(n.EmbeddedInode()), Name: name, Dir2: f.ino(newParent.EmbeddedInode()), Name2: newName})
	}
	return errno
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	if flags&syscall.O_TRUNC != 0 {
		f.mu.Lock()
		defer f.mu.Unlock()
	}
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		f.record(Op{Kind: OpTruncate, Ino: f.ino(n.EmbeddedInode())})
	}
	return &handle{inner: fh}, fl, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: fh, n: n}, fl, 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	sz, ok := in.GetSize()
	if !ok {
		return n.LoopbackNode.Setattr(ctx, fh, in, out)
	}
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	errno := n.LoopbackNode.Setattr(ctx, fh, in, out)
	if errno == 0 {
		f.record(Op{Kind: OpTruncate, Ino: f.ino(n.EmbeddedInode()), Off: int64(sz)})
	}
	return errno
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := fh.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	w, ok := h.inner.(fs.FileWriter)
	if !ok {
		return 0, syscall.EBADF
	}
	written, errno := w.Write(ctx, data, off)
	if written > 0 {
		f.record(Op{Kind: OpWrite, Ino: f.ino(n.EmbeddedInode()), Off: off, Data: append([]byte(nil), data[:written]...)})
	}
	return written, errno
}

func (n *node) Writev(ctx context.Context, fh fs.FileHandle, iov [][]byte, off int64) (uint32, syscall.Errno) {
	var data []byte
	for _, b := range iov {
		data = append(data, b...)
	}
	return n.Write(ctx, fh, data, off)
}

// Fsync records a file's fsync or fdatasync. The backing file is not
// synced: its durability is not what is tested.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	k := OpFsync
	switch {
	case n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR:
		k = OpFsyncDir
	case flags&1 != 0: // FUSE_FSYNC_FDATASYNC
		k = OpFdatasync
	}
	f.record(Op{Kind: k, Ino: f.ino(n.EmbeddedInode())})
	return 0
}

// CopyFileRange is refused so the kernel and the program fall back to
// reads and writes, which are recorded.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Setxattr and Removexattr pass through unrecorded (not modelled).

// handle is an open file. It offers only what the record can follow:
// no passthrough (the kernel would write to the backing file directly),
// no fallocate, no locks forwarded (the kernel keeps them locally).
type handle struct {
	inner fs.FileHandle
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.inner.(fs.FileReader).Read(ctx, buf, off)
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileFlusher).Flush(ctx)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileReleaser).Release(ctx)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.inner.(fs.FileGetattrer).Getattr(ctx, out)
}

// Setattr is reached through node.Setattr, which records a truncate.
func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.inner.(fs.FileSetattrer).Setattr(ctx, in, out)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.inner.(fs.FileLseeker).Lseek(ctx, off, whence)
}

// dirHandle is an open directory whose fsync is recorded.
type dirHandle struct {
	inner fs.FileHandle
	n     *node
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.inner.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.inner.(fs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.n.Fsync(ctx, nil, flags)
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeOnForgetter    = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeWritever       = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.FileReader         = (*handle)(nil)
	_ fs.FileFsyncdirer     = (*dirHandle)(nil)
)
