// Package commands wires qbox's commands and personalities to the command
// line. Each command lives in its own sub-package with a core that takes
// readers, writers and a config; this package only assembles them.
package commands

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
// that program's arguments and I/O conventions. Run returns an error and
// never picks a number: Main prints it (after Name, or the name qbox was
// run by when Name is empty) and maps it to an exit status under Scheme.
type Personality struct {
	Run    func(args []string) error
	Scheme *exitcode.Scheme
	Name   string
}

// Personalities maps argv[0]'s base name to the program qbox stands in for.
var Personalities = map[string]Personality{
	"qmail-qmqpc":  {inject.QmqpcMain, exitcode.QmailQueue, "qmail-qmqpc"},
	"sendmail":     {sendmail.SendmailMain, exitcode.Sysexits, ""},
	"qmail-inject": {sendmail.QmailInjectMain, exitcode.Qmail, ""},
	"mailq":        {sendmail.MailqMain, exitcode.Sysexits, ""},
	"newaliases":   {sendmail.NewaliasesMain, exitcode.Sysexits, ""},
	"maildirqmtp":  {flush.MaildirqmtpMain, exitcode.Qmail, "maildirqmtp"},
	"maildirsmtp":  {flush.MaildirsmtpMain, exitcode.Qmail, "maildirsmtp"},
	"qmail-remote": {qmailremote.Main, exitcode.QmailRemote, "qmail-remote"},
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
// It is the one exit boundary: personalities and commands return errors,
// which are printed once (report) and mapped once (status).
func Main(args []string) int {
	if p, ok := PersonalityOf(args[0]); ok {
		name := p.Name
		if name == "" {
			name = filepath.Base(args[0])
		}
		if help, ok := personalityHelp(args); ok {
			fmt.Fprint(os.Stdout, help)
			return status(nil, p.Scheme)
		}
		err := p.Run(args)
		reportPersonality(os.Stderr, name, args[0], err)
		return status(err, p.Scheme)
	}
	app := App(os.Stdin, os.Stdout, os.Stderr)
	if len(args) > 1 && !knownCommand(app, args[1]) {
		if home, ok := qmailremote.SpawnedUnderOtherName(args, os.Getwd); ok {
			// $QMAILREMOTE names the qbox binary itself: defer, never
			// bounce, and say how to fix the link.
			qmailremote.Misnamed(os.Stdout, args[0], home)
			return status(nil, exitcode.QmailRemote)
		}
	}
	err := checkCommandLine(app, args, os.Stderr)
	if err == nil {
		err = app.Run(args) // its ExitErrHandler reported err
	}
	// qmail's scheme, unless the command named its own (exitcode.Under).
	return status(err, exitcode.Qmail)
}

// status is err's exit status under s: the only caller of exitcode.Code.
func status(err error, s *exitcode.Scheme) int { return exitcode.Code(err, s) }

// report prints err on stderr as "name: err", unless it is nil or was
// already reported (exitcode.Reported).
func report(stderr io.Writer, name string, err error) {
	if err == nil || exitcode.Silent(err) {
		return
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
}

// reportCommand prints a qbox command's error. A usage error ends with
// where to read more, and one that is a usage line ("usage: qbox CMD
// ...") is printed as it is, without the command's name before it.
func reportCommand(stderr io.Writer, name string, err error) {
	if err == nil || exitcode.Silent(err) {
		return
	}
	if exitcode.ClassOf(err) != exitcode.BadUsage {
		report(stderr, name, err)
		return
	}
	msg := err.Error()
	if !strings.Contains(msg, "see '") {
		msg += fmt.Sprintf("; see '%s --help'", name)
	}
	if strings.HasPrefix(msg, "usage: "+name+" ") {
		fmt.Fprintln(stderr, msg)
		return
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, msg)
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
			reportCommand(stderr, commandName(c), err)
		},
	}
	app.OnUsageError = usageErrorFor("qbox")
	setUsageErrors("qbox", app.Commands)
	completeVisibleFlags(app.Commands)
	return app
}

// commandName is the command c runs, as typed: "qbox queue check".
func commandName(c *cli.Context) string {
	if c == nil || c.Command == nil || c.Command.Name == "" || c.Command.Name == "qbox" {
		return "qbox"
	}
	if c.Command.HelpName != "" && strings.HasPrefix(c.Command.HelpName, "qbox ") {
		return c.Command.HelpName
	}
	return "qbox " + c.Command.Name
}
