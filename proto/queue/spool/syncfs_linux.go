package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes everything on f's file system durable, the directory
// entries of a directory this process may not open included (syncfs(2)).
func syncFS(f *os.File) error {
	return unix.Syncfs(int(f.Fd()))
}
