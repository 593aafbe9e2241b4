package maildir

// Scanning a maildir of queued outgoing mail, the way serialmail's
// maildirserial reads one: every file in new/ and cur/ (dotfiles skipped),
// oldest first, carrying its envelope in two header lines written by
// qmail-local (or by qbox's own spool):
//
//	Return-Path: <sender>
//	Delivered-To: PREFIXrecipient
//
// The message proper is everything after those two lines.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"qbox/proto"
)

// DefaultTmpMaxAge is how old a file in tmp/ must be before Scan removes
// it: 36 hours, as maildir readers have always done. A delivery that has
// not finished in that time never will.
const DefaultTmpMaxAge = 36 * time.Hour

// maxHeaderLine bounds each of the two envelope lines (without the LF).
// qmail refuses addresses of 1000 bytes or more; a longer line is not an
// envelope.
const maxHeaderLine = 4096

// MaxEnvelopeLine is the longest envelope line (without its LF) Scan
// reads back; a writer must not write a longer one.
const MaxEnvelopeLine = maxHeaderLine

// headSize is as much of a file as the envelope lines can take: reading
// this much always either finds both line ends or proves a line too long
// or the file too short.
const headSize = 2 * (maxHeaderLine + 1)

// Entry is one queued message file.
type Entry struct {
	Path      string    // full path of the file
	Name      string    // path relative to the maildir, e.g. "new/1700000000.P1.host"
	Sender    string    // between the brackets of line 1; empty is the null sender
	Recipient string    // line 2 after "Delivered-To: " and the prefix
	ModTime   time.Time // the file's mtime: when it was queued
	Size      int64     // size of the whole file
	Offset    int64     // where the message starts: just after line 2

	// What the scan saw, so OpenMessage sends that file and no other.
	id     fileID
	prefix string
}

// fileID is a file's identity: the same device and inode is the same
// file, whatever name it is reached by now.
type fileID struct{ dev, ino uint64 }

// MessageSize is the size of the message without the two envelope lines.
func (e *Entry) MessageSize() int64 { return e.Size - e.Offset }

// OpenMessage opens the file and returns a reader of exactly the message
// (from Offset, MessageSize bytes) and the file to close. It opens without
// following a symlink or blocking on a FIFO, and only the regular file the
// scan read: same device, inode and size, and the same envelope lines. A
// maildir others can write may have had its file replaced since the scan
// (a symlink to a file only root can read, to be mailed to the planter's
// recipient); that is refused with a Malformed error (errors.As) naming
// the file, and nothing of it is read. A file gone since the scan gives an
// error satisfying errors.Is(err, os.ErrNotExist).
func (e *Entry) OpenMessage() (io.Reader, io.Closer, error) {
	f, st, err := openMessageFile(e.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, e.malformed(err.Error())
	}
	if e.id == (fileID{}) || st.id != e.id || st.size != e.Size {
		f.Close()
		return nil, nil, e.malformed("replaced or changed since the scan; not sent")
	}
	want := "Return-Path: <" + e.Sender + ">\nDelivered-To: " + e.prefix + e.Recipient + "\n"
	if e.Offset != int64(len(want)) {
		f.Close()
		return nil, nil, e.malformed("replaced or changed since the scan; not sent")
	}
	head := make([]byte, len(want))
	if _, err := f.ReadAt(head, 0); err != nil || string(head) != want {
		f.Close()
		return nil, nil, e.malformed("envelope lines changed since the scan; not sent")
	}
	return io.NewSectionReader(f, e.Offset, e.Size-e.Offset), f, nil
}

func (e *Entry) malformed(reason string) Malformed {
	return Malformed{Path: e.Path, Name: e.Name, Reason: reason, ModTime: e.ModTime, Size: e.Size}
}

// Malformed is a file in new/ or cur/ that will never be sent as it is:
// its envelope lines cannot be parsed (too long, truncated, missing, or
// an address with CR or NUL, or an empty recipient), or it is not a
// regular file (a symlink, FIFO or the like, which is never opened). It
// is reported on every scan, so nothing stays in the queue without a
// word; serialmail skips such files silently. It is also the error
// OpenMessage returns for a file replaced since the scan.
type Malformed struct {
	Path   string
	Name   string
	Reason string
	// ModTime is the file's mtime (of the link itself for a symlink):
	// a caller that expires queued mail after a lifetime measures it
	// from here.
	ModTime time.Time
	Size    int64

	id fileID // what the scan saw under the name (the link itself for a symlink)
}

func (m Malformed) Error() string { return m.Name + ": " + m.Reason }

// Open opens the whole malformed file for reading (to attach it to a
// report before it is removed), the same way OpenMessage does: only when
// the scan found a regular file and it is still that file, unchanged in
// size. A symlink, FIFO or file replaced since the scan is never opened.
func (m *Malformed) Open() (io.Reader, io.Closer, error) {
	if m.id == (fileID{}) {
		return nil, nil, errors.New(m.Name + ": not a file the scan saw; not opened")
	}
	f, st, err := openMessageFile(m.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	if st.id != m.id || st.size != m.Size {
		f.Close()
		return nil, nil, errors.New(m.Name + ": replaced or changed since the scan; not opened")
	}
	return io.NewSectionReader(f, 0, m.Size), f, nil
}

// Remove unlinks the malformed file (a symlink itself, never its target)
// if the name is still what the scan saw; see Entry.Remove.
func (m *Malformed) Remove() error { return removeScanned(m.Path, m.id) }

// Remove unlinks the file once the message is delivered or bounced. Use
// it rather than os.Remove(e.Path): a user who can write the maildir may
// have replaced new/ or cur/ by a symlink since the scan (to /etc, where
// a file of the same name would go). Remove unlinks the name only in the
// real directory the path leads to without following a symlink, and only
// while the name is still the file the scan saw; otherwise it removes
// nothing and says why. A name already gone gives an error satisfying
// errors.Is(err, os.ErrNotExist).
func (e *Entry) Remove() error { return removeScanned(e.Path, e.id) }

func removeScanned(path string, id fileID) error {
	if id == (fileID{}) {
		return fmt.Errorf("maildir: %s: not a file the scan saw; not removed", path)
	}
	d, err := openDirFD(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer syscall.Close(d)
	base := filepath.Base(path)
	st, err := statAtFD(d, base)
	if err != nil {
		return &os.PathError{Op: "remove", Path: path, Err: err}
	}
	if st.id != id {
		return fmt.Errorf("maildir: %s was replaced since the scan; not removed", path)
	}
	if err := syscall.Unlinkat(d, base); err != nil {
		return &os.PathError{Op: "remove", Path: path, Err: err}
	}
	return nil
}

// oPath is Linux's O_PATH (the same on every architecture; package
// syscall lacks it on some): a descriptor for fstat only, which with
// O_NOFOLLOW names a symlink itself, and opening it never touches a FIFO
// or device.
const oPath = 0x200000

// statAt is fstatat(dir, name, AT_SYMLINK_NOFOLLOW): what the name is in
// that directory, a symlink not followed.
func statAt(dir *os.File, name string) (fileStat, error) {
	return statAtFD(int(dir.Fd()), name)
}

// statAtFD is statAt on a directory descriptor.
func statAtFD(dir int, name string) (fileStat, error) {
	fd, err := syscall.Openat(dir, name, oPath|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fileStat{}, err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fileStat{}, err
	}
	return fileStat{
		id:    fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)},
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		atime: time.Unix(st.Atim.Sec, st.Atim.Nsec),
		mode:  st.Mode,
	}, nil
}

// ScanOptions controls Scan.
type ScanOptions struct {
	// Prefix selects files whose line 2 is "Delivered-To: " followed by
	// Prefix, and is stripped from the recipient. Empty selects every
	// file with a Delivered-To line 2.
	Prefix string
	// TmpMaxAge is the age past which tmp/ files are removed; 0 means
	// DefaultTmpMaxAge, negative leaves tmp/ alone.
	TmpMaxAge time.Duration
	// Now is the current time for the tmp/ clean-up; zero means
	// time.Now().
	Now time.Time
}

// ScanResult is what Scan found.
type ScanResult struct {
	Entries    []Entry     // selected files, oldest mtime first (ties by name)
	Malformed  []Malformed // files that cannot be sent, in the same order
	Skipped    []string    // names of files whose line 2 is a Delivered-To without the prefix: left alone
	TmpRemoved []string    // names of stale tmp/ files removed
}

// Scan reads the maildir dir. Files vanishing while it runs (another
// reader delivered them) are ignored. A file that is not a regular file,
// or whose envelope cannot be read, is reported as Malformed; only an
// unreadable new/ or cur/ (or one that is a symlink) fails the scan.
//
// Every file is opened through a descriptor of its directory, without
// following symlinks and without blocking on a FIFO, and the envelope is
// read from that descriptor; the Entry remembers the file's identity so
// OpenMessage sends that file only.
func Scan(dir string, opt ScanOptions) (*ScanResult, error) {
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	res := &ScanResult{}
	if opt.TmpMaxAge >= 0 {
		maxAge := opt.TmpMaxAge
		if maxAge == 0 {
			maxAge = DefaultTmpMaxAge
		}
		res.TmpRemoved = cleanTmp(dir, now.Add(-maxAge))
	}

	type skipped struct {
		name  string
		mtime time.Time
	}
	var skips []skipped
	buf := make([]byte, headSize)
	for _, sub := range []string{"new", "cur"} {
		d, err := openDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, err
		}
		names, err := d.Readdirnames(-1)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("maildir: %w", err)
		}
		for _, base := range names {
			if strings.HasPrefix(base, ".") {
				continue
			}
			name := sub + "/" + base
			path := filepath.Join(dir, name)
			fd, st, err := openRegular(base, d)
			if errors.Is(err, os.ErrNotExist) {
				continue // delivered by another reader meanwhile
			}
			if err != nil {
				m := Malformed{Path: path, Name: name, Reason: err.Error()}
				if st, err := statAt(d, base); err == nil {
					m.ModTime, m.Size, m.id = st.mtime, st.size, st.id
				}
				res.Malformed = append(res.Malformed, m)
				continue
			}
			env, err := readEnvelope(fd, st.size, opt.Prefix, buf)
			syscall.Close(fd)
			switch {
			case errors.Is(err, errForeign):
				skips = append(skips, skipped{name, st.mtime})
			case err != nil:
				res.Malformed = append(res.Malformed, Malformed{Path: path, Name: name, Reason: err.Error(), ModTime: st.mtime, Size: st.size, id: st.id})
			default:
				res.Entries = append(res.Entries, Entry{
					Path: path, Name: name, Sender: env.sender, Recipient: env.recipient,
					ModTime: st.mtime, Size: st.size, Offset: env.offset,
					id: st.id, prefix: opt.Prefix,
				})
			}
		}
		d.Close()
	}
	older := func(ta, tb time.Time, na, nb string) bool {
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return na < nb
	}
	sort.Slice(res.Entries, func(i, j int) bool {
		a, b := &res.Entries[i], &res.Entries[j]
		return older(a.ModTime, b.ModTime, a.Name, b.Name)
	})
	sort.Slice(res.Malformed, func(i, j int) bool {
		a, b := &res.Malformed[i], &res.Malformed[j]
		return older(a.ModTime, b.ModTime, a.Name, b.Name)
	})
	sort.Slice(skips, func(i, j int) bool {
		return older(skips[i].mtime, skips[j].mtime, skips[i].name, skips[j].name)
	})
	for _, s := range skips {
		res.Skipped = append(res.Skipped, s.name)
	}
	return res, nil
}

// openDir opens a maildir subdirectory for reading its names and opening
// files relative to it; a symlink there is refused, not followed.
func openDir(path string) (*os.File, error) {
	fd, err := openDirFD(path)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openDirFD is openDir's descriptor, for a caller that only opens,
// stats and unlinks relative to it (Remove, once per delivered file:
// os.OpenFile would add four fcntl and epoll calls to each).
func openDirFD(path string) (int, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
			return -1, fmt.Errorf("maildir: %s is not a directory (a symlink is not followed)", path)
		}
		return -1, fmt.Errorf("maildir: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	return fd, nil
}

// fileStat is what fstat said about an opened file.
type fileStat struct {
	id    fileID
	size  int64
	mtime time.Time
	atime time.Time // statAt only
	mode  uint32    // statAt only
}

// messageFile is a queued file opened by openMessageFile and read with
// pread. Not an *os.File: making one costs three fcntl calls, for every
// message a flush sends. Like an *os.File, it closes its descriptor only
// once no read is using it: a read racing Close never reads from a
// descriptor number reused by another file.
type messageFile struct {
	mu      sync.RWMutex // held shared by reads, exclusively by Close
	fd      int          // -1 once closed
	cleanup runtime.Cleanup
}

// openMessageFile opens the regular file at path (openRegular). A
// messageFile nobody closed is closed when it is collected.
func openMessageFile(path string) (*messageFile, fileStat, error) {
	fd, st, err := openRegular(path, nil)
	if err != nil {
		return nil, st, err
	}
	f := &messageFile{fd: fd}
	f.cleanup = runtime.AddCleanup(f, func(fd int) { syscall.Close(fd) }, fd)
	return f, st, nil
}

// ReadAt fills p from offset off; it returns io.EOF only when the file
// ends first.
func (f *messageFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.fd < 0 {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(f.fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

// Close closes the file once no read is using it; closing it again does
// nothing.
func (f *messageFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd < 0 {
		return nil
	}
	f.cleanup.Stop()
	err := syscall.Close(f.fd)
	f.fd = -1
	return err
}

// openRegular opens name for reading, relative to dir when dir is not
// nil, and returns it only when it is a regular file. It never follows a
// symlink in the last component (O_NOFOLLOW) and never waits for a FIFO's
// writer (O_NONBLOCK, a no-op for regular files); the type is checked on
// the opened descriptor, so nothing swapped in between a check and the
// open is read. It returns a bare descriptor, read with pread (no
// *os.File, whose making costs three fcntl calls). A missing file gives
// an error satisfying errors.Is(err, os.ErrNotExist); any other error
// says, in words, what the file is instead.
func openRegular(name string, dir *os.File) (int, fileStat, error) {
	const flags = syscall.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_NOCTTY | syscall.O_CLOEXEC
	var fd int
	var err error
	for {
		if dir != nil {
			fd, err = syscall.Openat(int(dir.Fd()), name, flags, 0)
		} else {
			fd, err = syscall.Open(name, flags, 0)
		}
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOENT):
		return -1, fileStat{}, &os.PathError{Op: "open", Path: name, Err: err}
	case errors.Is(err, syscall.ELOOP):
		return -1, fileStat{}, errors.New("a symbolic link: not followed, not sent")
	case errors.Is(err, syscall.ENXIO):
		return -1, fileStat{}, errors.New("a socket or device: not read, not sent")
	default:
		return -1, fileStat{}, fmt.Errorf("cannot open: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return -1, fileStat{}, fmt.Errorf("cannot stat: %v", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return -1, fileStat{}, fmt.Errorf("%s: not read, not sent", fileType(st.Mode))
	}
	fs := fileStat{
		id:    fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)},
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
	}
	return fd, fs, nil
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO:
		return "a FIFO"
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFLNK:
		return "a symbolic link"
	case syscall.S_IFSOCK:
		return "a socket"
	case syscall.S_IFCHR, syscall.S_IFBLK:
		return "a device"
	default:
		return "not a regular file"
	}
}

// envelope is what the two envelope lines say.
type envelope struct {
	sender, recipient string
	offset            int64 // where the message starts
}

// errForeign marks a file whose line 2 is a Delivered-To without the
// prefix: someone else's mail, left alone.
var errForeign = errors.New("Delivered-To without the prefix")

// readEnvelope reads the envelope lines from the start of the file fd,
// whose size fstat gave, into buf (at least headSize bytes), and parses
// them with parseEnvelope. One pread reads a file shorter than headSize
// whole; reading stops early only at the end of the file.
func readEnvelope(fd int, size int64, prefix string, buf []byte) (envelope, error) {
	want := int(min(size, headSize))
	n := 0
	for n < headSize {
		m, err := syscall.Pread(fd, buf[n:headSize], int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return envelope{}, fmt.Errorf("cannot read: %v", err)
		}
		n += m
		if m == 0 || n >= want {
			break
		}
	}
	return parseEnvelope(buf[:n], prefix)
}

// parseEnvelope parses the envelope lines at the start of head, which is
// the whole file or at least its first headSize bytes. It returns
// errForeign for someone else's file; any other error is why the file is
// malformed. The addresses pass the same checks as any envelope entering
// qbox: a file is not a way round them.
func parseEnvelope(head []byte, prefix string) (envelope, error) {
	const rp, dt = "Return-Path: <", "Delivered-To: "
	line1, rest, err := cutLine(head, 1)
	if err != nil {
		return envelope{}, err
	}
	line2, _, err := cutLine(rest, 2)
	if err == nil && bytes.HasPrefix(line2, []byte(dt)) && !bytes.HasPrefix(line2[len(dt):], []byte(prefix)) {
		return envelope{}, errForeign
	}
	if !bytes.HasPrefix(line1, []byte(rp)) || !bytes.HasSuffix(line1, []byte(">")) {
		return envelope{}, fmt.Errorf("line 1 is not \"Return-Path: <...>\": %q", printable(line1))
	}
	if err != nil {
		return envelope{}, err
	}
	if !bytes.HasPrefix(line2, []byte(dt)) {
		return envelope{}, fmt.Errorf("line 2 is not a Delivered-To header: %q", printable(line2))
	}
	e := envelope{
		sender:    string(line1[len(rp) : len(line1)-1]),
		recipient: string(line2[len(dt)+len(prefix):]),
		offset:    int64(len(line1) + len(line2) + 2),
	}
	if err := proto.CheckSender(e.sender); err != nil {
		return envelope{}, fmt.Errorf("Return-Path: %w", err)
	}
	if err := proto.CheckRecipient(e.recipient); err != nil {
		return envelope{}, fmt.Errorf("Delivered-To after the prefix: %w", err)
	}
	return e, nil
}

// cutLine returns the LF-terminated line n (1 or 2) at the start of b,
// without the LF, and what follows it.
func cutLine(b []byte, n int) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	switch {
	case i > maxHeaderLine || (i < 0 && len(b) > maxHeaderLine):
		return nil, nil, fmt.Errorf("line %d is longer than %d bytes", n, maxHeaderLine)
	case i < 0 && n == 1 && len(b) == 0:
		return nil, nil, errors.New("empty file")
	case i < 0:
		return nil, nil, fmt.Errorf("file ends inside envelope line %d", n)
	}
	return b[:i], b[i+1:], nil
}

func printable(b []byte) string {
	if len(b) > 80 {
		b = b[:80]
	}
	return proto.Printable(string(b), 80)
}

// cleanTmp removes tmp/ files last accessed and modified before cutoff
// and returns their names. It reads tmp/ through a descriptor opened
// without following a symlink and unlinks relative to it: a tmp/ that a
// user replaced by a symlink to a directory of root's is left alone, not
// emptied of its old files.
func cleanTmp(dir string, cutoff time.Time) []string {
	d, err := openDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return nil
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil
	}
	var removed []string
	for _, name := range names {
		st, err := statAt(d, name)
		if err != nil || st.mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		last := st.mtime
		if st.atime.After(last) {
			last = st.atime
		}
		if last.Before(cutoff) {
			if syscall.Unlinkat(int(d.Fd()), name) == nil {
				removed = append(removed, "tmp/"+name)
			}
		}
	}
	return removed
}

// Group is messages that can travel as one package: the same sender and
// byte-identical content after the envelope lines, differing only in the
// recipient.
type Group struct {
	Sender  string
	Entries []Entry // in scan order; Entries[0] is read for the content
}

// Recipients returns the group's recipients in entry order.
func (g *Group) Recipients() []string {
	r := make([]string, len(g.Entries))
	for i := range g.Entries {
		r[i] = g.Entries[i].Recipient
	}
	return r
}

// ModTime is the oldest mtime in the group.
func (g *Group) ModTime() time.Time {
	t := g.Entries[0].ModTime
	for _, e := range g.Entries[1:] {
		if e.ModTime.Before(t) {
			t = e.ModTime
		}
	}
	return t
}

// GroupEntries puts entries with the same sender and identical message
// content into one Group each, keeping scan order (a group sits where its
// first entry was). Contents are compared by SHA-256 and then byte by
// byte, so equal digests of different files never merge them. An entry
// that cannot be read stays in a group of its own; the sender will meet
// the error when it opens it.
func GroupEntries(entries []Entry) []Group {
	type key struct {
		sender string
		size   int64
		sum    [sha256.Size]byte
	}
	type sizeKey struct {
		sender string
		size   int64
	}
	// Only entries sharing sender and size can match; hash just those.
	bySize := map[sizeKey]int{}
	for _, e := range entries {
		bySize[sizeKey{e.Sender, e.MessageSize()}]++
	}
	var groups []Group
	index := map[key][]int{} // candidate groups per key
	for _, e := range entries {
		if bySize[sizeKey{e.Sender, e.MessageSize()}] < 2 {
			groups = append(groups, Group{Sender: e.Sender, Entries: []Entry{e}})
			continue
		}
		sum, err := digest(&e)
		if err != nil {
			groups = append(groups, Group{Sender: e.Sender, Entries: []Entry{e}})
			continue
		}
		k := key{e.Sender, e.MessageSize(), sum}
		placed := false
		for _, gi := range index[k] {
			if same, err := sameContent(&groups[gi].Entries[0], &e); err == nil && same {
				groups[gi].Entries = append(groups[gi].Entries, e)
				placed = true
				break
			}
		}
		if !placed {
			groups = append(groups, Group{Sender: e.Sender, Entries: []Entry{e}})
			index[k] = append(index[k], len(groups)-1)
		}
	}
	return groups
}

func digest(e *Entry) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	r, f, err := e.OpenMessage()
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func sameContent(a, b *Entry) (bool, error) {
	if a.MessageSize() != b.MessageSize() {
		return false, nil
	}
	ra, fa, err := a.OpenMessage()
	if err != nil {
		return false, err
	}
	defer fa.Close()
	rb, fb, err := b.OpenMessage()
	if err != nil {
		return false, err
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 32<<10), make([]byte, 32<<10)
	for {
		na, errA := io.ReadFull(ra, bufA)
		nb, errB := io.ReadFull(rb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == io.EOF || errB == io.ErrUnexpectedEOF, nil
		}
		if errA != nil {
			return false, errA
		}
		if errB != nil {
			return false, errB
		}
	}
}

// Lock holds an exclusive flock on a maildir, so two flushes (or two
// spool runs) never send the same file at once.
type Lock struct{ f *os.File }

// ErrLocked means another process holds the maildir's lock.
var ErrLocked = errors.New("maildir is locked by another process")

// TryLock takes the maildir's lock without waiting: it fails with
// ErrLocked at once when another process holds it. The lock is an flock
// on the directory itself, so nothing is created inside the maildir and
// the lock ends with the process however it exits.
func TryLock(dir string) (*Lock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("maildir: lock %s: %w", dir, err)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}
