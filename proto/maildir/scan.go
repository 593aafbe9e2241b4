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
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// DefaultTmpMaxAge is how old a file in tmp/ must be before Scan removes
// it: 36 hours, as maildir readers have always done. A delivery that has
// not finished in that time never will.
const DefaultTmpMaxAge = 36 * time.Hour

// maxHeaderLine bounds each of the two envelope lines. qmail refuses
// addresses of 1000 bytes or more; a longer line is not an envelope.
const maxHeaderLine = 4096

// Entry is one queued message file.
type Entry struct {
	Path      string    // full path of the file
	Name      string    // path relative to the maildir, e.g. "new/1700000000.P1.host"
	Sender    string    // between the brackets of line 1; empty is the null sender
	Recipient string    // line 2 after "Delivered-To: " and the prefix
	ModTime   time.Time // the file's mtime: when it was queued
	Size      int64     // size of the whole file
	Offset    int64     // where the message starts: just after line 2
}

// MessageSize is the size of the message without the two envelope lines.
func (e *Entry) MessageSize() int64 { return e.Size - e.Offset }

// OpenMessage opens the file and returns a reader of exactly the message
// (from Offset, MessageSize bytes) and the file to close.
func (e *Entry) OpenMessage() (io.Reader, *os.File, error) {
	f, err := os.Open(e.Path)
	if err != nil {
		return nil, nil, err
	}
	return io.NewSectionReader(f, e.Offset, e.Size-e.Offset), f, nil
}

// Malformed is a file selected by its Delivered-To line whose envelope
// cannot be parsed. serialmail skips such files silently, which leaves
// them in the queue forever; Scan reports them so a person can look.
type Malformed struct {
	Path   string
	Name   string
	Reason string
}

func (m Malformed) Error() string { return m.Name + ": " + m.Reason }

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
	Malformed  []Malformed // selected but unparsable, in the same order
	Skipped    []string    // names of files whose line 2 lacks the prefix: left alone
	TmpRemoved []string    // names of stale tmp/ files removed
}

// Scan reads the maildir dir. Files vanishing while it runs (another
// reader delivered them) are ignored. Errors reading a single file are
// reported as Malformed; only an unreadable new/ or cur/ fails the scan.
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

	type candidate struct {
		name  string
		mtime time.Time
	}
	var cands []candidate
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, fmt.Errorf("maildir: %w", err)
		}
		for _, de := range entries {
			if strings.HasPrefix(de.Name(), ".") {
				continue
			}
			info, err := de.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			cands = append(cands, candidate{name: sub + "/" + de.Name(), mtime: info.ModTime()})
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].mtime.Equal(cands[j].mtime) {
			return cands[i].mtime.Before(cands[j].mtime)
		}
		return cands[i].name < cands[j].name
	})

	for _, c := range cands {
		path := filepath.Join(dir, c.name)
		e, selected, err := readEnvelope(path, opt.Prefix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if !selected {
			res.Skipped = append(res.Skipped, c.name)
			continue
		}
		if err != nil {
			res.Malformed = append(res.Malformed, Malformed{Path: path, Name: c.name, Reason: err.Error()})
			continue
		}
		e.Path, e.Name = path, c.name
		res.Entries = append(res.Entries, e)
	}
	return res, nil
}

// readEnvelope parses the two envelope lines. selected reports whether
// line 2 carries the prefix (or, when line 2 cannot be read, whether line
// 1 at least looked like an envelope, so a truncated queue file is
// reported instead of ignored).
func readEnvelope(path, prefix string) (e Entry, selected bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return e, true, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return e, true, err
	}
	br := bufio.NewReaderSize(f, 1024)
	line1, err1 := readLine(br)
	line2, err2 := readLine(br)

	const dt = "Delivered-To: "
	switch {
	case err2 == nil && strings.HasPrefix(line2, dt+prefix):
		selected = true
	case err2 == nil && strings.HasPrefix(line2, dt):
		return e, false, nil // someone else's mail: leave it alone
	case err1 == nil && strings.HasPrefix(line1, "Return-Path: <"):
		selected = true // looks like ours, but line 2 is broken
		if err2 != nil {
			return e, true, err2
		}
		return e, true, errors.New("line 2 is not a Delivered-To header")
	default:
		return e, false, nil
	}
	if err1 != nil {
		return e, true, err1
	}
	if !strings.HasPrefix(line1, "Return-Path: <") || !strings.HasSuffix(line1, ">") {
		return e, true, fmt.Errorf("line 1 is not \"Return-Path: <...>\": %q", printable(line1))
	}
	e.Sender = line1[len("Return-Path: <") : len(line1)-1]
	e.Recipient = line2[len(dt)+len(prefix):]
	if e.Recipient == "" {
		return e, true, errors.New("empty recipient after the prefix")
	}
	e.ModTime = info.ModTime()
	e.Size = info.Size()
	e.Offset = int64(len(line1) + len(line2) + 2)
	return e, true, nil
}

// readLine reads one LF-terminated line (without the LF) of at most
// maxHeaderLine bytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxHeaderLine+1 {
			return "", fmt.Errorf("header line longer than %d bytes", maxHeaderLine)
		}
		if err == nil {
			return string(b[:len(b)-1]), nil
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return "", errors.New("file ends inside the envelope lines")
		}
		return "", err
	}
}

func printable(s string) string {
	if len(s) > 80 {
		s = s[:80]
	}
	return strings.Map(func(r rune) rune {
		if r < 32 || r > 126 {
			return '?'
		}
		return r
	}, s)
}

// cleanTmp removes tmp/ files last accessed and modified before cutoff
// and returns their names.
func cleanTmp(dir string, cutoff time.Time) []string {
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return nil
	}
	var removed []string
	for _, de := range entries {
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		last := info.ModTime()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if at := time.Unix(st.Atim.Sec, st.Atim.Nsec); at.After(last) {
				last = at
			}
		}
		if last.Before(cutoff) {
			if os.Remove(filepath.Join(dir, "tmp", de.Name())) == nil {
				removed = append(removed, "tmp/"+de.Name())
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
