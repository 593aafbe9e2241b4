package commands

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/flush"
	"qbox/commands/sendmail"
)

// The command-line contract: a usage error is one line on stderr that
// names the problem and the nearest valid flag or command, then where to
// read more; never the help on stdout, and never a temporary exit status
// (a script would retry a typo for ever).

// usageErrorFor returns the OnUsageError handler of the command named
// name ("qbox inject"): it turns urfave/cli's flag errors into one line.
func usageErrorFor(name string) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, _ bool) error {
		return exitcode.Usage("%s; see '%s --help'", describeUsageError(c, err), name)
	}
}

func describeUsageError(c *cli.Context, err error) string {
	msg := err.Error()
	var flags []cli.Flag
	if c != nil && c.Command != nil {
		flags = c.Command.Flags
	}
	// The texts of Go's flag package, which urfave/cli passes on.
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		name = strings.TrimLeft(name, "-")
		s := fmt.Sprintf("unknown flag -%s%s", dashes(name), name)
		if near := nearestFlag(flags, name); near != "" {
			s += fmt.Sprintf(" (did you mean %s?)", near)
		}
		return s
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		name = strings.TrimLeft(name, "-")
		return fmt.Sprintf("-%s%s needs a value", dashes(name), name)
	}
	if rest, ok := strings.CutPrefix(msg, `invalid value "`); ok {
		value, rest, _ := strings.Cut(rest, `" for flag `)
		name, _, _ := strings.Cut(strings.TrimLeft(rest, "-"), ":")
		s := fmt.Sprintf("invalid value %q for -%s%s", value, dashes(name), name)
		if isDurationFlag(flags, name) {
			s += ": a duration needs a unit, e.g. 5s, 2m or 1h"
		}
		return s
	}
	return msg
}

// dashes is what a flag name is written with after the first dash.
func dashes(name string) string {
	if len(name) > 1 {
		return "-"
	}
	return ""
}

func nearestFlag(flags []cli.Flag, provided string) string {
	var visible []cli.Flag
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		visible = append(visible, f)
	}
	if len(visible) == 0 || cli.SuggestFlag == nil {
		return ""
	}
	return cli.SuggestFlag(visible, provided, true)
}

func isDurationFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		if _, ok := f.(*cli.DurationFlag); !ok {
			continue
		}
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// checkCommandLine catches what urfave/cli would answer with a help page
// and exit 0 or 111: no command at all, or one that does not exist. It
// returns a usage error, or nil when app.Run should go ahead.
func checkCommandLine(app *cli.App, args []string, stderr io.Writer) error {
	names := visibleCommandNames(app)
	if len(args) < 2 {
		fmt.Fprintf(stderr, "usage: qbox COMMAND [flags] [args]; commands: %s; see 'qbox --help'\n", strings.Join(names, ", "))
		return exitcode.Reported(exitcode.BadUsage)
	}
	name := args[1]
	if knownCommand(app, name) {
		return nil
	}
	s := fmt.Sprintf("qbox: unknown command %q", name)
	if near := nearestCommand(app, name); near != "" {
		s += fmt.Sprintf(" (did you mean %q?)", near)
	}
	fmt.Fprintf(stderr, "%s; commands: %s; see 'qbox --help'\n", s, strings.Join(names, ", "))
	return exitcode.Reported(exitcode.BadUsage)
}

// knownCommand reports whether name, qbox's first argument, is for
// urfave/cli to handle: a flag, help, or a command.
func knownCommand(app *cli.App, name string) bool {
	return strings.HasPrefix(name, "-") || name == "help" || name == "h" || app.Command(name) != nil
}

func visibleCommandNames(app *cli.App) []string {
	var names []string
	for _, c := range app.Commands {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	sort.Strings(names)
	return names
}

// nearestCommand is the visible command whose name is closest to name by
// edit distance, if any is close enough to be a typo of it.
func nearestCommand(app *cli.App, name string) string {
	best, bestDist := "", len(name)/2+2
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		for _, n := range c.Names() {
			if d := editDistance(name, n); d < bestDist {
				best, bestDist = c.Name, d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// usageSchemes are the commands whose usage errors are numbered by a
// scheme of their own: a Nagios plugin's bad command line is UNKNOWN (3).
var usageSchemes = map[string]*exitcode.Scheme{"qbox queue check": exitcode.Nagios}

// setUsageErrors gives every command (and subcommand) the one-line usage
// error handler.
func setUsageErrors(prefix string, cmds []*cli.Command) {
	for _, c := range cmds {
		name := prefix + " " + c.Name
		if c.OnUsageError == nil {
			c.OnUsageError = usageErrorFor(name)
			if s := usageSchemes[name]; s != nil {
				h := c.OnUsageError
				c.OnUsageError = func(c *cli.Context, err error, sub bool) error {
					return exitcode.Under(s, h(c, err, sub))
				}
			}
		}
		setUsageErrors(name, c.Subcommands)
	}
}

// synopses are the personalities whose command line can be wrong, with
// their synopsis and manual page: `NAME --help` prints them, and their
// usage errors end with "see 'NAME --help'", as qbox's commands' do.
var synopses = map[string]struct{ synopsis, page string }{
	"sendmail":     {sendmail.SendmailSynopsis, "sendmail(8)"},
	"qmail-inject": {sendmail.QmailInjectSynopsis, "qmail-inject(8)"},
	"maildirqmtp":  {flush.MaildirqmtpSynopsis, "maildirqmtp(1)"},
	"maildirsmtp":  {flush.MaildirsmtpSynopsis, "maildirsmtp(1)"},
}

// synopsisOf is the synopsis of the personality argv0 names, if it has
// one.
func synopsisOf(argv0 string) (synopsis, page string, ok bool) {
	name := filepath.Base(argv0)
	if a, ok := Aliases[name]; ok {
		name = a
	}
	s, ok := synopses[name]
	return s.synopsis, s.page, ok
}

// personalityHelp is what a lone --help prints for a personality with a
// synopsis: the usage lines and where the manual is.
func personalityHelp(args []string) (string, bool) {
	synopsis, page, ok := synopsisOf(args[0])
	if !ok || len(args) != 2 || args[1] != "--help" {
		return "", false
	}
	lines := strings.Split(synopsis, "\n")
	return fmt.Sprintf("usage: %s\nSee %s (qbox man DIR writes the manual pages).\n",
		strings.Join(lines, "\n       "), page), true
}

// reportPersonality prints a personality's error after name; a usage
// error of one with a synopsis is printed as a qbox command's is (a
// usage line as it is, and "see 'NAME --help'" at its end).
func reportPersonality(stderr io.Writer, name, argv0 string, err error) {
	if _, _, ok := synopsisOf(argv0); ok {
		reportCommand(stderr, name, err)
		return
	}
	report(stderr, name, err)
}
