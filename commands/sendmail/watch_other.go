//go:build !linux

package sendmail

import "errors"

// dropWatch is inotify's on Linux; elsewhere the runner takes drops at
// its interval.
type dropWatch struct{ C <-chan struct{} }

func watchDrops(string) (*dropWatch, error) {
	return nil, errors.New("watching the maildrop needs Linux's inotify; drops are taken at each run")
}

func (*dropWatch) Close() {}
