package maildir

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes everything on dir's file system durable (syncfs(2)): the
// way to make an entry durable in a directory this process may not open.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
