// Package spool is the local queue a sendmail shim falls back to when no
// QMQP server takes a message right now, so a relay outage never loses
// mail.
//
// Layout: the spool is a maildir in the form `qbox serve` writes and
// serialmail reads, one file per recipient:
//
//	DIR/new/KEY      Return-Path: <sender>
//	                 Delivered-To: recipient
//	                 <the message>
//	DIR/err/KEY      the last delivery error for new/KEY, one line; its
//	                 mtime is when that attempt was made
//
// The error lives in a separate small file rather than in the message
// file (which stays byte-for-byte what a maildir reader expects) or in an
// extended attribute (not every file system keeps them). It is advisory:
// losing it loses nothing but a line of `mailq` output. Directories are
// mode 0700 and files 0600, so other users cannot read queued mail.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"qbox/proto"
	"qbox/proto/maildir"
)

// SystemDir is the spool used when it is writable (normally by root).
const SystemDir = "/var/spool/qbox"

// Spool is an opened spool directory.
type Spool struct {
	Dir string
}

// Locate picks the spool directory: $QBOX_SPOOL, else SystemDir when it
// is (or can be made) writable by this process, else ~/.qbox/spool.
func Locate(getenv func(string) string) (string, error) {
	if d := getenv("QBOX_SPOOL"); d != "" {
		return d, nil
	}
	if writable(SystemDir) {
		return SystemDir, nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("spool: %s is not writable and there is no home directory: %w", SystemDir, err)
		}
		home = h
	}
	return filepath.Join(home, ".qbox", "spool"), nil
}

// writable reports whether dir exists and this process may create files
// in it, or does not exist and its parent allows creating it.
func writable(dir string) bool {
	if _, err := os.Stat(dir); err == nil {
		return syscall.Access(dir, 0x2|0x1) == nil // W_OK|X_OK
	}
	return syscall.Access(filepath.Dir(dir), 0x2|0x1) == nil
}

// Open creates the spool if needed (mode 0700) and returns it.
func Open(dir string) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// A directory someone made by hand may be readable by others;
	// tighten it when it is ours (Chmod fails harmlessly otherwise).
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		os.Chmod(dir, 0o700)
	}
	if err := maildir.Init(dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "err"), 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return &Spool{Dir: dir}, nil
}

// ErrBadAddress is returned for an address that cannot be written into
// the envelope lines (a line break or NUL in it).
var ErrBadAddress = errors.New("spool: address contains a line break or NUL")

// Enqueue writes msg (size bytes, read through ReaderAt so each
// recipient's file gets its own copy) durably into the spool: one file
// per recipient, all fsync'd, then new/ fsync'd once. Only when it
// returns nil may the caller tell its own caller the message is safe.
// lastErr, when not empty, is recorded as the reason it was queued.
func (s *Spool) Enqueue(env proto.Envelope, msg io.ReaderAt, size int64, lastErr string) ([]string, error) {
	if len(env.Recipients) == 0 {
		return nil, errors.New("spool: no recipients")
	}
	for _, a := range append([]string{env.Sender}, env.Recipients...) {
		if strings.ContainsAny(a, "\r\n\x00") {
			return nil, fmt.Errorf("%w: %q", ErrBadAddress, a)
		}
	}
	b := maildir.NewBatch(s.Dir)
	for _, rcpt := range env.Recipients {
		f, err := b.Create()
		if err != nil {
			b.Abort()
			return nil, fmt.Errorf("spool: %w", err)
		}
		if _, err := fmt.Fprintf(f, "Return-Path: <%s>\nDelivered-To: %s\n", env.Sender, rcpt); err != nil {
			b.Abort()
			return nil, fmt.Errorf("spool: %w", err)
		}
		n, err := io.Copy(f, io.NewSectionReader(msg, 0, size))
		if err == nil && n != size {
			err = fmt.Errorf("message is %d bytes, expected %d", n, size)
		}
		if err != nil {
			b.Abort()
			return nil, fmt.Errorf("spool: writing %s: %w", f.Name(), err)
		}
	}
	paths, err := b.Commit()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if lastErr != "" {
		for _, p := range paths {
			s.setError(filepath.Base(p), lastErr)
		}
	}
	return paths, nil
}

func (s *Spool) errPath(key string) string { return filepath.Join(s.Dir, "err", key) }

// setError records the last delivery error for a queued file. It is
// best effort: written to a dotfile and renamed, never fsync'd, because
// it only informs mailq.
func (s *Spool) setError(key, text string) {
	text = proto.Printable(text, 2000)
	tmp := filepath.Join(s.Dir, "err", "."+key+".tmp")
	if err := os.WriteFile(tmp, []byte(text+"\n"), 0o600); err != nil {
		return
	}
	if os.Rename(tmp, s.errPath(key)) != nil {
		os.Remove(tmp)
	}
}

// LastError returns the recorded error for a queued file's key (its base
// name), and when it was recorded; "" when none.
func (s *Spool) LastError(key string) (string, os.FileInfo) {
	p := s.errPath(key)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", nil
	}
	st, _ := os.Stat(p)
	return strings.TrimRight(string(b), "\n"), st
}

func (s *Spool) clearError(key string) { os.Remove(s.errPath(key)) }

// cleanErrors removes error files whose message is gone (delivered by an
// older run that died between the two removals).
func (s *Spool) cleanErrors(live map[string]bool) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, "err"))
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
				os.Remove(filepath.Join(s.Dir, "err", name)) // an interrupted setError
			}
			continue
		}
		if !live[name] {
			os.Remove(filepath.Join(s.Dir, "err", name))
		}
	}
}

// List returns the queued files, oldest first, and the malformed ones.
// It takes no lock and changes nothing.
func (s *Spool) List() (*maildir.ScanResult, error) {
	return maildir.Scan(s.Dir, maildir.ScanOptions{TmpMaxAge: -1})
}
