//go:build libfloor

package main

// Built with the tag libfloor (BenchmarkInjectOneMessage does), the floor
// also links the libraries qbox's design card names and the standard
// packages every qbox command needs, each only for its package
// initialisation: what one binary built on them pays at each start before
// any code of its own.
import (
	_ "crypto/tls"
	_ "log/slog"
	_ "log/syslog"

	_ "github.com/emersion/go-maildir"
	_ "github.com/emersion/go-smtp"
	_ "github.com/mattn/go-isatty"
	_ "github.com/miekg/dns"
	_ "github.com/urfave/cli/v2"
)
