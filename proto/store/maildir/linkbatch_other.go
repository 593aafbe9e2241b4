//go:build !linux

package maildir

// newFileBatch returns a Batch: O_TMPFILE is Linux's.
func newFileBatch(dir string) fileBatch { return NewBatch(dir) }
