package maildir

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncFS makes everything on dir's file system durable (SyncFS): the
// way to make an entry durable in a directory this process may not open.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return SyncFS(d)
}

// SyncFS makes everything on f's file system durable, the entries of
// directories this process may not open included: syncfs(2), then the
// cache flush syncfs leaves out on a file system without a journal (see
// syncThenFlush).
func SyncFS(f *os.File) error {
	return syncThenFlush(
		func() error { return unix.Syncfs(int(f.Fd())) },
		func() error { return unix.Fsync(int(f.Fd())) },
		f.Name())
}

// fileSystemSync returns a syncfs(2) of dir's file system for the group
// commit, or nil where the store must fsync each file instead. It trusts
// syncfs only where it is a full sync that reports errors: Linux 5.8 or
// later (before, syncfs returned 0 whatever write-back failed) on a
// local file system whose sync_fs commits its journal (ext2/3/4, XFS,
// btrfs) or that keeps nothing anyway (tmpfs). On FUSE, NFS and the rest
// it may be partial or a no-op: the kernel sends no syncfs to an ordinary
// FUSE server.
//
// The descriptor stays open for the store's life: syncfs reports a
// write-back error to each descriptor opened before it happened, so one
// opened before the store's first write sees all of them.
func fileSystemSync(dir string) func() error {
	if !kernelAtLeast(5, 8) {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || !syncfsTrusted(int64(st.Type)) {
		unix.Close(fd)
		return nil
	}
	d := os.NewFile(uintptr(fd), dir) // closed with the store, by its finalizer
	return func() error { return SyncFS(d) }
}

// syncThenFlush runs syncfs, then an fsync of a descriptor on the same
// file system, whose only work is the disk's cache flush.
//
// The fsync is for file systems without a journal (ext2, ext4 made
// without one): their syncfs flushes the disk's write cache before it
// writes the inode table and bitmaps, which such a file system leaves to
// the block device's own write-back (sync_filesystem's last
// sync_blockdev, after ->sync_fs). Those writes have completed when
// syncfs returns but may still sit in a volatile cache; a name linked
// then could reach the disk before its inode, and a power cut leave a
// name in new/ for an inode never written. Their fsync always ends with a
// flush, covering every write completed before it. With a journal (ext4,
// XFS, btrfs) syncfs has committed it and the fsync of a clean
// directory costs next to nothing.
func syncThenFlush(syncfs, fsync func() error, name string) error {
	if err := syncfs(); err != nil {
		return &os.PathError{Op: "syncfs", Path: name, Err: err}
	}
	if err := fsync(); err != nil {
		return &os.PathError{Op: "fsync", Path: name, Err: err}
	}
	return nil
}

// syncfsTrusted reports whether statfs's f_type names a file system
// whose syncfs the group commit may rely on (see fileSystemSync).
func syncfsTrusted(fsType int64) bool {
	switch fsType {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC:
		return true
	}
	return false
}

// kernelAtLeast reports whether the running kernel's release is at
// least major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

// releaseAtLeast reports whether a kernel release ("6.1.0-13-amd64")
// is at least major.minor; false when it cannot tell.
func releaseAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	leading := func(s string) (int, error) {
		end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(s)
		}
		return strconv.Atoi(s[:end])
	}
	ma, err1 := leading(parts[0])
	mi, err2 := leading(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
