// Package crashfs is a crash file system for tests: a FUSE pass-through
// over a real directory that records, in order, every operation that
// changes what a power cut could keep (write, truncate, create, mkdir,
// rename, link, unlink, rmdir, symlink, fsync, fdatasync and the fsync of
// a directory), and rebuilds, for any point k of that record, the image
// a file system may legally hold after power is lost just before
// operation k. A test runs a real program on the mount (a child process:
// see Mount), then hands each rebuilt image to the program or to a scan
// and checks its promises against it.
//
// # The model
//
// The state is a set of inodes (files, directories, symbolic links), each
// with a volatile version (what a reader sees now) and a durable version
// (what survives a cut). The base, the backing directory's contents when
// it is mounted, is durable. Then, in the order recorded:
//
//   - write and truncate change a file's volatile data only;
//   - fsync and fdatasync of a file make its volatile data (content and
//     size) durable, and nothing else: not its name in any directory;
//   - create, mkdir, symlink, link, rename, unlink and rmdir change the
//     volatile entries of the directories involved only;
//   - fsync of a directory makes that directory's volatile entries
//     durable (each name with the inode it names), and nothing else: not
//     the data of the files it names, not its own name in its parent.
//
// The image at a cut is the tree reached from the root through durable
// entries, each file with its durable data. This is the weakest reading
// of the rules qbox relies on:
//
//   - POSIX fsync (The Open Group Base Specifications, Issue 7, fsync):
//     "all data for the open file descriptor named by fildes is to be
//     transferred to the storage device"; POSIX says nothing of the
//     directory entry, and nothing is durable without it.
//   - Linux fsync(2): "Calling fsync() does not necessarily ensure that
//     the entry in the directory containing the file has also reached
//     disk. For that an explicit fsync() on a file descriptor for the
//     directory is also needed."; fdatasync(2) flushes the data and the
//     metadata needed to read it (the size), so both are modelled alike.
//   - rename(2) is atomic for a running system only; after a crash
//     either name may be kept, and which one depends on which directory
//     was fsync'd (a rename from tmp/ to new/ with only new/ fsync'd may
//     leave the file under both names: the model keeps both).
//
// ext4 in its default data=ordered mode is stronger: it writes a file's
// data before committing the metadata that names it, and commits a
// transaction's renames together; a test that passes on this model passes
// on ext4, not the other way round. Hardware or firmware that
// acknowledges a flush it has not done is outside any such model.
//
// Besides the weakest model (POSIX), Models lists adversarial variants in
// which one kind of unsynced change survives and the other is dropped:
// EntriesDropped keeps every write (as if the page cache was written back)
// but drops unsynced directory changes (renames, links, unlinks);
// TailDropped keeps every directory change (as a metadata journal that
// commits ahead of the data could) but drops each file's unsynced data,
// leaving a file whose name survived with its synced prefix only
// (empty, if it was never fsync'd). ProcessCrash keeps everything: what a
// kill -9 leaves, the control that every check passes without a cut.
//
// Not modelled: file modes, owners, times and extended attributes (a
// chmod passes through and is treated as durable at once); syncfs(2) and
// sync(2), which the kernel does not send to an ordinary FUSE server
// (FUSE_SYNCFS reaches virtiofs only), so a program that relies on them
// alone is reported as losing data; mmap'd writes; a write torn inside
// itself (a write is kept or dropped whole).
package crashfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Kind is the kind of a recorded operation.
type Kind uint8

const (
	OpCreate    Kind = iota + 1 // a new file Ino named Name in Dir
	OpMkdir                     // a new directory Ino named Name in Dir
	OpSymlink                   // a new symbolic link Ino (target in Data) named Name in Dir
	OpTmpfile                   // a new file Ino with no name (O_TMPFILE)
	OpWrite                     // Data written to Ino at Off
	OpTruncate                  // Ino's size set to Off
	OpRename                    // Name in Dir renamed to Name2 in Dir2
	OpExchange                  // Name in Dir and Name2 in Dir2 swapped (RENAME_EXCHANGE)
	OpLink                      // Ino given the name Name in Dir
	OpUnlink                    // Name removed from Dir
	OpRmdir                     // the empty directory Name removed from Dir
	OpFsync                     // fsync of the file Ino
	OpFdatasync                 // fdatasync of the file Ino
	OpFsyncDir                  // fsync (or fdatasync) of the directory Ino
)

var kindNames = map[Kind]string{
	OpCreate: "create", OpMkdir: "mkdir", OpSymlink: "symlink", OpTmpfile: "tmpfile",
	OpWrite: "write", OpTruncate: "truncate", OpRename: "rename", OpExchange: "exchange",
	OpLink: "link", OpUnlink: "unlink", OpRmdir: "rmdir", OpFsync: "fsync",
	OpFdatasync: "fdatasync", OpFsyncDir: "fsyncdir",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("op%d", k)
}

// IsSync tells whether the operation can make something durable.
func (k Kind) IsSync() bool { return k == OpFsync || k == OpFdatasync || k == OpFsyncDir }

// Op is one recorded operation. Inodes are numbered by the recorder,
// never reused (a backing inode number that is reused gets a new one).
type Op struct {
	Kind        Kind
	Ino         int    // the inode created, written, linked or synced
	Dir, Dir2   int    // directories of Name and Name2
	Name, Name2 string // entry names
	Off         int64  // write offset; truncate size
	Data        []byte // written bytes; symlink target
}

func (o Op) String() string {
	switch o.Kind {
	case OpWrite:
		return fmt.Sprintf("write ino %d off %d len %d", o.Ino, o.Off, len(o.Data))
	case OpTruncate:
		return fmt.Sprintf("truncate ino %d to %d", o.Ino, o.Off)
	case OpRename, OpExchange:
		return fmt.Sprintf("%s %d/%s -> %d/%s", o.Kind, o.Dir, o.Name, o.Dir2, o.Name2)
	case OpFsync, OpFdatasync, OpFsyncDir, OpTmpfile:
		return fmt.Sprintf("%s ino %d", o.Kind, o.Ino)
	}
	return fmt.Sprintf("%s %d/%s ino %d", o.Kind, o.Dir, o.Name, o.Ino)
}

// Model says which unsynced changes survive a cut.
type Model struct {
	Name string
	// AllData keeps every file's volatile data (else its last synced
	// data); AllEntries keeps every directory's volatile entries (else
	// those of its last fsync).
	AllData, AllEntries bool
}

var (
	// POSIX keeps only what fsync made durable: the weakest model.
	POSIX = Model{Name: "posix"}
	// EntriesDropped keeps all data but only synced directory changes.
	EntriesDropped = Model{Name: "entries-dropped", AllData: true}
	// TailDropped keeps all directory changes but only synced data.
	TailDropped = Model{Name: "tail-dropped", AllEntries: true}
	// ProcessCrash keeps everything, as a kill -9 does.
	ProcessCrash = Model{Name: "process-crash", AllData: true, AllEntries: true}
)

// Models are the models a crash test checks, weakest first.
var Models = []Model{POSIX, EntriesDropped, TailDropped}

type inode struct {
	kind    byte // 'f', 'd', 'l'
	data    []byte
	synced  []byte
	entries map[string]int // directories: volatile
	durable map[string]int // directories: as of the last fsync
}

// state is the model's state: inode number to inode.
type state struct {
	inodes map[int]*inode
	root   int
}

func newState() *state { return &state{inodes: map[int]*inode{}} }

func (s *state) clone() *state {
	c := &state{inodes: make(map[int]*inode, len(s.inodes)), root: s.root}
	for n, in := range s.inodes {
		cp := *in
		if in.kind == 'd' {
			cp.entries = cloneMap(in.entries)
			cp.durable = cloneMap(in.durable)
		}
		c.inodes[n] = &cp
	}
	return c
}

func cloneMap(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (s *state) dir(n int) (*inode, error) {
	in := s.inodes[n]
	if in == nil || in.kind != 'd' {
		return nil, fmt.Errorf("crashfs: inode %d is not a known directory", n)
	}
	return in, nil
}

// apply performs one operation on the volatile state, and on the durable
// state for a sync. Slices are never changed in place once shared: data
// is copied on write, so a synced version stays as it was.
func (s *state) apply(o Op) error {
	switch o.Kind {
	case OpCreate, OpMkdir, OpSymlink, OpTmpfile:
		in := &inode{kind: 'f'}
		switch o.Kind {
		case OpMkdir:
			in = &inode{kind: 'd', entries: map[string]int{}, durable: map[string]int{}}
		case OpSymlink:
			// A symbolic link's target is written with its entry.
			in = &inode{kind: 'l', data: o.Data, synced: o.Data}
		}
		if _, dup := s.inodes[o.Ino]; dup {
			return fmt.Errorf("crashfs: inode %d created twice", o.Ino)
		}
		s.inodes[o.Ino] = in
		if o.Kind == OpTmpfile {
			return nil
		}
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		d.entries[o.Name] = o.Ino
	case OpWrite:
		in := s.inodes[o.Ino]
		if in == nil || in.kind != 'f' {
			return fmt.Errorf("crashfs: write to inode %d, not a known file", o.Ino)
		}
		end := o.Off + int64(len(o.Data))
		size := max(int64(len(in.data)), end)
		nd := make([]byte, size)
		copy(nd, in.data)
		copy(nd[o.Off:], o.Data)
		in.data = nd
	case OpTruncate:
		in := s.inodes[o.Ino]
		if in == nil || in.kind != 'f' {
			return fmt.Errorf("crashfs: truncate of inode %d, not a known file", o.Ino)
		}
		nd := make([]byte, o.Off)
		copy(nd, in.data)
		in.data = nd
	case OpRename, OpExchange:
		d1, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		d2, err := s.dir(o.Dir2)
		if err != nil {
			return err
		}
		a, ok := d1.entries[o.Name]
		if !ok {
			return fmt.Errorf("crashfs: rename of %d/%s: no such entry", o.Dir, o.Name)
		}
		if o.Kind == OpExchange {
			b, ok := d2.entries[o.Name2]
			if !ok {
				return fmt.Errorf("crashfs: exchange with %d/%s: no such entry", o.Dir2, o.Name2)
			}
			d1.entries[o.Name], d2.entries[o.Name2] = b, a
			return nil
		}
		delete(d1.entries, o.Name)
		d2.entries[o.Name2] = a
	case OpLink:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		if s.inodes[o.Ino] == nil {
			return fmt.Errorf("crashfs: link of unknown inode %d", o.Ino)
		}
		d.entries[o.Name] = o.Ino
	case OpUnlink, OpRmdir:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		delete(d.entries, o.Name)
	case OpFsync, OpFdatasync, OpFsyncDir:
		in := s.inodes[o.Ino]
		if in == nil {
			return fmt.Errorf("crashfs: fsync of unknown inode %d", o.Ino)
		}
		if in.kind == 'd' {
			in.durable = cloneMap(in.entries)
		} else {
			in.synced = in.data
		}
	default:
		return fmt.Errorf("crashfs: unknown operation %v", o.Kind)
	}
	return nil
}

// Log is a recorded run: the base state and the operations after it.
type Log struct {
	base *state
	Ops  []Op
}

// Len is the number of operations.
func (l *Log) Len() int { return len(l.Ops) }

// SyncPoints are the cut points right after each fsync: every k with
// Ops[k-1] a sync, plus 0 and Len. A cut between two syncs can only keep
// less than a cut right after the second, so for a program that promises
// only what it has fsync'd these are the cuts that matter most.
func (l *Log) SyncPoints() []int {
	pts := []int{0}
	for i, o := range l.Ops {
		if o.Kind.IsSync() {
			pts = append(pts, i+1)
		}
	}
	if pts[len(pts)-1] != len(l.Ops) {
		pts = append(pts, len(l.Ops))
	}
	return pts
}

// Summary counts the operations of each kind, e.g. "write 12, fsync 3".
func (l *Log) Summary() string {
	n := map[Kind]int{}
	for _, o := range l.Ops {
		n[o.Kind]++
	}
	var parts []string
	for k := OpCreate; k <= OpFsyncDir; k++ {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%v %d", k, n[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// AllPoints are every cut point, 0 to Len.
func (l *Log) AllPoints() []int {
	pts := make([]int, len(l.Ops)+1)
	for i := range pts {
		pts[i] = i
	}
	return pts
}

// Image is the state after a cut, as the model says it may be.
type Image struct {
	st    *state
	model Model
}

// Image replays the first k operations and returns the image a cut just
// before operation k leaves under model m.
func (l *Log) Image(k int, m Model) (*Image, error) {
	if k < 0 || k > len(l.Ops) {
		return nil, fmt.Errorf("crashfs: cut %d outside 0..%d", k, len(l.Ops))
	}
	st := l.base.clone()
	for i, o := range l.Ops[:k] {
		if err := st.apply(o); err != nil {
			return nil, fmt.Errorf("operation %d (%v): %w", i, o, err)
		}
	}
	return &Image{st: st, model: m}, nil
}

// Images calls fn with the image at each cut point in pts (ascending)
// under each model, replaying the log once.
func (l *Log) Images(pts []int, models []Model, fn func(k int, img *Image) error) error {
	if !sort.IntsAreSorted(pts) {
		return fmt.Errorf("crashfs: cut points not ascending")
	}
	st := l.base.clone()
	done := 0
	for _, k := range pts {
		if k < done || k > len(l.Ops) {
			return fmt.Errorf("crashfs: cut %d outside %d..%d", k, done, len(l.Ops))
		}
		for ; done < k; done++ {
			if err := st.apply(l.Ops[done]); err != nil {
				return fmt.Errorf("operation %d (%v): %w", done, l.Ops[done], err)
			}
		}
		for _, m := range models {
			if err := fn(k, &Image{st: st, model: m}); err != nil {
				return fmt.Errorf("cut at %d of %d (%s model): %w", k, len(l.Ops), m.Name, err)
			}
		}
	}
	return nil
}

func (img *Image) entries(in *inode) map[string]int {
	if img.model.AllEntries {
		return in.entries
	}
	return in.durable
}

func (img *Image) content(in *inode) []byte {
	if img.model.AllData || in.kind == 'l' {
		return in.data
	}
	return in.synced
}

// lookup walks a slash-separated path from the root.
func (img *Image) lookup(path string) (*inode, error) {
	in := img.st.inodes[img.st.root]
	for _, part := range strings.Split(strings.Trim(filepath.ToSlash(path), "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		if in.kind != 'd' {
			return nil, fmt.Errorf("%s: not a directory", path)
		}
		n, ok := img.entries(in)[part]
		if !ok {
			return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
		}
		in = img.st.inodes[n]
	}
	return in, nil
}

// ReadDir lists the names in a directory of the image, sorted.
func (img *Image) ReadDir(path string) ([]string, error) {
	in, err := img.lookup(path)
	if err != nil {
		return nil, err
	}
	if in.kind != 'd' {
		return nil, fmt.Errorf("%s: not a directory", path)
	}
	names := make([]string, 0, len(img.entries(in)))
	for n := range img.entries(in) {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// ReadFile returns a file's content in the image (shared: do not change).
func (img *Image) ReadFile(path string) ([]byte, error) {
	in, err := img.lookup(path)
	if err != nil {
		return nil, err
	}
	if in.kind != 'f' {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return img.content(in), nil
}

// WriteTo writes the image into dir (which must exist and be empty),
// for a program to run on. Files get mode 0600, directories 0700; a
// file with several names is written once per name.
func (img *Image) WriteTo(dir string) error {
	return img.writeDir(img.st.inodes[img.st.root], dir, map[*inode]bool{})
}

func (img *Image) writeDir(d *inode, path string, onPath map[*inode]bool) error {
	// A directory renamed with only one side fsync'd may appear twice;
	// one inside itself would loop.
	if onPath[d] {
		return nil
	}
	onPath[d] = true
	defer delete(onPath, d)
	for name, n := range img.entries(d) {
		in := img.st.inodes[n]
		p := filepath.Join(path, name)
		switch in.kind {
		case 'd':
			if err := os.Mkdir(p, 0700); err != nil {
				return err
			}
			if err := img.writeDir(in, p, onPath); err != nil {
				return err
			}
		case 'l':
			if err := os.Symlink(string(in.data), p); err != nil {
				return err
			}
		default:
			if err := os.WriteFile(p, img.content(in), 0600); err != nil {
				return err
			}
		}
	}
	return nil
}

// scanBase reads a directory tree into a durable state, numbering its
// inodes from 1 and calling note with each one's backing inode number.
func scanBase(root string, note func(backing uint64, ino int)) (*state, int, error) {
	st := newState()
	next := 1
	seen := map[uint64]int{} // hard links: one inode
	var walk func(path string) (int, error)
	walk = func(path string) (int, error) {
		fi, err := os.Lstat(path)
		if err != nil {
			return 0, err
		}
		b := fi.Sys().(*syscall.Stat_t).Ino
		if n, ok := seen[b]; ok && !fi.IsDir() {
			return n, nil
		}
		n := next
		next++
		seen[b] = n
		note(b, n)
		switch {
		case fi.IsDir():
			in := &inode{kind: 'd', entries: map[string]int{}}
			st.inodes[n] = in
			des, err := os.ReadDir(path)
			if err != nil {
				return 0, err
			}
			for _, de := range des {
				c, err := walk(filepath.Join(path, de.Name()))
				if err != nil {
					return 0, err
				}
				in.entries[de.Name()] = c
			}
			in.durable = cloneMap(in.entries)
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				return 0, err
			}
			st.inodes[n] = &inode{kind: 'l', data: []byte(t), synced: []byte(t)}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return 0, err
			}
			st.inodes[n] = &inode{kind: 'f', data: b, synced: b}
		default:
			return 0, fmt.Errorf("crashfs: %s: only files, directories and symbolic links are modelled", path)
		}
		return n, nil
	}
	r, err := walk(root)
	if err != nil {
		return nil, 0, err
	}
	st.root = r
	return st, next, nil
}
