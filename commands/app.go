// Package commands wires qbox's commands and personalities to the command
// line. Each command lives in its own sub-package with a core that takes
// readers, writers and a config; this package only assembles them.
package commands

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/flush"
	"qbox/commands/inject"
	"qbox/commands/mxcheck"
	"qbox/commands/probe"
	"qbox/commands/qmailremote"
	"qbox/commands/queue"
	"qbox/commands/sendmail"
	"qbox/commands/serve"
)

// Version is set at build time with -ldflags "-X qbox/commands.Version=...".
var Version = "dev"

// A Personality is qbox run under another program's name (a symlink), with
// that program's arguments, I/O conventions and exit codes.
type Personality func(args []string) int

// Personalities maps argv[0]'s base name to the program qbox stands in for.
var Personalities = map[string]Personality{
	"qmail-qmqpc":  inject.QmqpcMain,
	"sendmail":     sendmail.SendmailMain,
	"qmail-inject": sendmail.QmailInjectMain,
	"mailq":        sendmail.MailqMain,
	"newaliases":   sendmail.NewaliasesMain,
	"maildirqmtp":  flush.MaildirqmtpMain,
	"maildirsmtp":  flush.MaildirsmtpMain,
	"qmail-remote": qmailremote.Main,
}

// Aliases are other names a personality is installed under. mini-qmail
// links bin/qmail-queue to qmail-qmqpc, so qmail-inject, sendmail and
// qmail-qmtpd forward over QMQP; the link to qbox keeps that name.
var Aliases = map[string]string{
	"qmail-queue": "qmail-qmqpc",
}

// PersonalityOf returns the personality argv0 names, if any.
func PersonalityOf(argv0 string) (Personality, bool) {
	name := filepath.Base(argv0)
	if a, ok := Aliases[name]; ok {
		name = a
	}
	p, ok := Personalities[name]
	return p, ok
}

// Main runs qbox with the process's arguments and returns the exit status.
func Main(args []string) int {
	if p, ok := PersonalityOf(args[0]); ok {
		return p(args)
	}
	app := App(os.Stdin, os.Stdout, os.Stderr)
	if len(args) > 1 && !knownCommand(app, args[1]) {
		if home, ok := qmailremote.SpawnedUnderOtherName(args, os.Getwd); ok {
			// $QMAILREMOTE names the qbox binary itself: defer, never
			// bounce, and say how to fix the link.
			return qmailremote.Misnamed(os.Stdout, args[0], home)
		}
	}
	err := checkCommandLine(app, args, os.Stderr)
	if err == nil {
		err = app.Run(args)
	}
	// qmail's scheme, unless the command named its own (exitcode.Under).
	return exitcode.Code(err, exitcode.Qmail)
}

// App builds the qbox command-line application.
func App(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "qbox",
		Usage:                "a toolbox for QMQP and QMTP: inject, serve, flush a maildir, check MX and probe",
		Version:              Version,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			inject.Command(),
			serve.Command(),
			flush.Command(),
			mxcheck.Command(),
			probe.Command(),
			queue.Command(),
			completionCommand(),
			manCommand(),
		},
		// Errors are printed once, here, and turned into an exit status
		// by Main; commands never call os.Exit.
		ExitErrHandler: func(c *cli.Context, err error) {
			if err == nil {
				return
			}
			name := "qbox"
			if c != nil && c.Command != nil && c.Command.Name != "" && c.Command.Name != "qbox" {
				name += " " + c.Command.Name
			}
			if exitcode.Silent(err) {
				return
			}
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
		},
	}
	app.OnUsageError = usageErrorFor("qbox")
	setUsageErrors("qbox", app.Commands)
	completeVisibleFlags(app.Commands)
	return app
}
