//go:build !linux

package spool

import (
	"os"
	"syscall"
)

// syncFS makes the new name durable where syncfs(2) does not exist:
// sync(2), everything.
func syncFS(f *os.File) error {
	syscall.Sync()
	return f.Sync()
}
