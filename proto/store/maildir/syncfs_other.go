//go:build !linux

package maildir

import "syscall"

// syncFS makes dir's new entries durable where syncfs(2) does not
// exist: sync(2), everything.
func syncFS(dir string) error {
	syscall.Sync()
	return nil
}
