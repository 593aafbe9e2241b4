// The man page generator is left out of the binary that `make build`
// ships (tag urfave_cli_no_docs, which also drops urfave/cli's markdown and
// roff libraries and their start-up cost from every personality); `make man`
// builds without the tag to run it.

//go:build !urfave_cli_no_docs

package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
	"qbox/commands/flush"
	"qbox/commands/inject"
	"qbox/commands/manpage"
	"qbox/commands/qmailremote"
	"qbox/commands/sendmail"
)

// A ManPage is one rendered manual page (roff).
type ManPage struct {
	Name    string // qbox, qbox-inject, sendmail, ...
	Section int
	Roff    string
}

// File is the page's file name: NAME.SECTION.
func (p ManPage) File() string { return fmt.Sprintf("%s.%d", p.Name, p.Section) }

// commandSections puts the daemon in section 8; every other command is a
// user command (section 1).
var commandSections = map[string]int{"serve": 8}

// seeAlso names the pages related to each command's page, besides
// qbox(1); a personality's page names its own (manpage.Page.SeeAlso).
var seeAlso = map[string][]string{
	"qbox-inject":        {"sendmail(8)", "qmail-qmqpc(8)", "qbox-serve(8)"},
	"qbox-serve":         {"qbox-inject(1)", "qbox-flush-maildir(1)", "qmail-qmqpc(8)"},
	"qbox-flush-maildir": {"maildirqmtp(1)", "maildirsmtp(1)", "qbox-serve(8)", "qbox-mx-check(1)"},
	"qbox-mx-check":      {"qbox-probe(1)", "qbox-flush-maildir(1)"},
	"qbox-probe":         {"qbox-mx-check(1)", "qbox-serve(8)"},
}

// qboxDescription is the DESCRIPTION of qbox(1), in the plain-text form
// of the commands' descriptions (see textToMarkdown).
const qboxDescription = `qbox is one program for D. J. Bernstein's QMQP (port 628) and QMTP (port 209):
a QMQP client (inject), a QMQP and QMTP server storing into a maildir or
handing off to qmail-queue (serve), serialmail's maildirqmtp (flush-maildir),
and two diagnostics (mx-check, probe). Each command has its own page,
qbox-COMMAND(1) (qbox-serve(8) for serve), and --help.

Run under another name (a symbolic link to qbox) it is that program, with that
program's arguments and exit codes; each has its own page:

   sendmail       complete the header, send over QMQP, spool on failure
   qmail-inject   the same with qmail-inject's options and exit codes
   mailq          list the sendmail spool
   newaliases     succeed: qbox keeps no alias database
   qmail-qmqpc    the qmail-queue interface forwarded over QMQP
   qmail-queue    qmail-qmqpc under mini-qmail's name for it
   maildirqmtp    serialmail's maildirqmtp (flush-maildir)
   maildirsmtp    serialmail's maildirsmtp (flush-maildir --smtp)
   qmail-remote   qmail's remote delivery over SMTP and, to MXPS hosts, QMTP

The commands exit 0 on success, 100 on a permanent failure (bad usage,
rejected message) and 111 on a temporary one (try again later), as qmail's
programs do; mx-check and probe report what they found in their own codes.

QMQP is not a public service: it carries no authentication. Bind serve to
loopback or a private network and list the clients with --allow.

ENVIRONMENT

   QMQPSERVERS    QMQP servers (comma or space separated) for inject,
                  qmail-qmqpc, the sendmail personalities and bounces
   QMAILHOME      where control/qmqpservers, control/me and friends are
                  (default /var/qmail; the qmail-remote personality, when
                  it is unset, takes the home qmail-rspawn runs it in)
   QBOX_SPOOL     the sendmail spool (default: the system queue, else
                  ~/.qbox/spool)
   QBOX_SYSTEM_QUEUE  the system queue (default /var/spool/qbox)`

// personalityPages are the personalities' pages, each written beside the
// parser of its arguments; the order is their order in qbox(1)'s SEE ALSO.
func personalityPages() []manpage.Page {
	return slices.Concat(sendmail.ManPages, inject.ManPages, flush.ManPages, qmailremote.ManPages)
}

// ManPages renders qbox(1), a page for each visible command of app (the
// running application, so the pages document exactly its flags) and one
// for each personality.
func ManPages(app *cli.App) ([]ManPage, error) {
	var pages []ManPage
	var commands []*cli.Command
	for _, c := range app.Commands {
		if !c.Hidden && c.Name != "help" {
			commands = append(commands, c)
		}
	}
	top := &cli.App{Name: "qbox", Usage: app.Usage, Description: textToMarkdown(qboxDescription), Commands: commands}
	var synopsis []string
	for _, c := range commands {
		synopsis = append(synopsis, commandSynopsis(c))
	}
	synopsis = append(synopsis, "qbox --help | --version")
	var all []string
	for _, c := range commands {
		all = append(all, fmt.Sprintf("qbox-%s(%d)", c.Name, section(c.Name)))
	}
	for _, p := range personalityPages() {
		all = append(all, fmt.Sprintf("%s(%d)", p.Name, p.Section))
	}
	page, err := render(top, 1, synopsis, all)
	if err != nil {
		return nil, err
	}
	pages = append(pages, page)

	for _, c := range commands {
		a := &cli.App{
			Name:        "qbox-" + c.Name,
			Usage:       c.Usage,
			Description: textToMarkdown(c.Description),
			Flags:       c.Flags,
		}
		page, err := render(a, section(c.Name), []string{commandSynopsis(c)}, append([]string{"qbox(1)"}, seeAlso[a.Name]...))
		if err != nil {
			return nil, err
		}
		pages = append(pages, page)
	}
	for _, p := range personalityPages() {
		a := &cli.App{Name: p.Name, Usage: p.Usage, Description: textToMarkdown(p.Description)}
		page, err := render(a, p.Section, strings.Split(p.Synopsis, "\n"), append([]string{"qbox(1)"}, p.SeeAlso...))
		if err != nil {
			return nil, err
		}
		pages = append(pages, page)
	}
	return pages, nil
}

// commandSynopsis is how the command is typed.
func commandSynopsis(c *cli.Command) string {
	s := "qbox " + c.Name
	if len(c.Flags) > 0 {
		s += " [options]"
	}
	return s + " " + c.ArgsUsage
}

func section(command string) int {
	if s, ok := commandSections[command]; ok {
		return s
	}
	return 1
}

var (
	// urfave/cli's template puts a "Usage:" block after the description;
	// the SYNOPSIS written here says it better.
	usageBlock = regexp.MustCompile(`\n\.PP\n\\fBUsage\\fP:\n\n\.EX\n(?s:.*?)\n\.EE\n`)
	synopsisTo = regexp.MustCompile(`(?s)\.SH SYNOPSIS\n.*?(\n\.SH |$)`)
	titleLine  = regexp.MustCompile(`(?m)^\.TH .*$`)
)

// render turns a documentation app into a roff page with urfave/cli's man
// page renderer, then gives it the real synopsis (the command as typed,
// not the page's name), calls the flags OPTIONS rather than GLOBAL
// OPTIONS, and adds a SEE ALSO section.
func render(a *cli.App, sec int, synopsis, see []string) (ManPage, error) {
	roff, err := a.ToManWithSection(sec)
	if err != nil {
		return ManPage{}, fmt.Errorf("rendering %s(%d): %w", a.Name, sec, err)
	}
	roff = usageBlock.ReplaceAllString(roff, "\n")
	var syn strings.Builder
	syn.WriteString(".SH SYNOPSIS\n")
	for i, line := range synopsis {
		if i > 0 {
			syn.WriteString(".br\n")
		}
		syn.WriteString(roffSynopsis(strings.TrimSpace(line)) + "\n")
	}
	replaced := false
	roff = synopsisTo.ReplaceAllStringFunc(roff, func(m string) string {
		replaced = true
		next := synopsisTo.FindStringSubmatch(m)[1]
		return syn.String() + next
	})
	if !replaced {
		return ManPage{}, fmt.Errorf("rendering %s(%d): no SYNOPSIS in urfave/cli's page", a.Name, sec)
	}
	roff = strings.Replace(roff, "\n.SH GLOBAL OPTIONS\n", "\n.SH OPTIONS\n", 1)
	roff = manFlags(roff, allFlags(a.Flags, a.Commands))
	// .TH first (urfave/cli puts .nh, no hyphenation, before it).
	roff = strings.TrimPrefix(strings.TrimLeft(roff, "\n"), ".nh\n")
	roff = titleLine.ReplaceAllLiteralString(roff, fmt.Sprintf(`.TH "%s" "%d" "" "qbox %s" "qbox manual"`+"\n.nh", strings.ToUpper(a.Name), sec, Version))
	roff = strings.TrimRight(roff, "\n") + "\n\n.SH SEE ALSO\n" + roffEscape(strings.Join(see, ", ")) + "\n"
	return ManPage{Name: a.Name, Section: sec, Roff: roff}, nil
}

// allFlags lists flags and those of commands and their subcommands.
func allFlags(flags []cli.Flag, commands []*cli.Command) []cli.Flag {
	all := append([]cli.Flag(nil), flags...)
	for _, c := range commands {
		all = append(all, allFlags(c.Flags, c.Subcommands)...)
	}
	return all
}

// roffSynopsis sets a synopsis line with the program's words in bold:
// everything before the first option or argument placeholder.
func roffSynopsis(line string) string {
	words := strings.Fields(line)
	n := 0
	for n < len(words) && isProgramWord(words[n]) {
		n++
	}
	n = max(n, 1)
	out := `\fB` + roffEscape(strings.Join(words[:n], " ")) + `\fR`
	if rest := strings.Join(words[n:], " "); rest != "" {
		out += " " + roffEscape(rest)
	}
	return out
}

// isProgramWord: a lower-case word such as "qbox" or "flush-maildir",
// not "[options]", "DIR" or "-t".
func isProgramWord(w string) bool {
	if w == "" || w[0] == '-' {
		return false
	}
	for _, r := range w {
		if !(r >= 'a' && r <= 'z' || r == '-') {
			return false
		}
	}
	return true
}

// roffEscape makes text safe on a roff text line.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// textToMarkdown turns the plain-text descriptions of the commands into
// the Markdown urfave/cli renders: paragraphs stay paragraphs with their
// Markdown characters escaped, indented lines (examples, tables) become
// verbatim blocks, and a paragraph that is one upper-case line (OPTIONS,
// EXIT STATUS) becomes a section heading.
func textToMarkdown(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var out []string
	blank := func() {
		if len(out) > 0 && out[len(out)-1] != "" {
			out = append(out, "")
		}
	}
	verbatim := false
	for i, l := range lines {
		l = strings.TrimRight(l, " \t")
		switch {
		case l == "":
			blank()
			verbatim = false
		case l[0] == ' ' || l[0] == '\t':
			if !verbatim {
				blank()
				verbatim = true
			}
			// Drop the text's own indentation (up to three spaces)
			// and indent by four: a Markdown code block.
			trimmed := l
			for k := 0; k < 3 && strings.HasPrefix(trimmed, " "); k++ {
				trimmed = trimmed[1:]
			}
			out = append(out, "    "+trimmed)
		case isHeading(lines, i):
			blank()
			out = append(out, "# "+l, "")
			verbatim = false
		default:
			if verbatim {
				blank()
				verbatim = false
			}
			out = append(out, escapeMarkdown(l))
		}
	}
	return strings.Join(out, "\n")
}

// isHeading: line i is upper case and alone in its paragraph.
func isHeading(lines []string, i int) bool {
	l := lines[i]
	if strings.ToUpper(l) != l || strings.ToLower(l) == l || strings.TrimFunc(l, func(r rune) bool { return r >= 'A' && r <= 'Z' || r == ' ' }) != "" {
		return false
	}
	before := i == 0 || strings.TrimSpace(lines[i-1]) == ""
	after := i == len(lines)-1 || strings.TrimSpace(lines[i+1]) == ""
	return before && after
}

// escapeMarkdown backslash-escapes what Markdown would read as markup,
// so the text prints as written.
func escapeMarkdown(l string) string {
	var b strings.Builder
	for i, r := range l {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '<', '>', '#', '&', '~', '|':
			b.WriteByte('\\')
		case '-', '+':
			if i == 0 {
				b.WriteByte('\\')
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

// WriteManPages renders the pages and writes each into dir (created if
// missing) as NAME.SECTION; it returns the files written.
func WriteManPages(app *cli.App, dir string) ([]string, error) {
	pages, err := ManPages(app)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, p := range pages {
		path := filepath.Join(dir, p.File())
		if err := os.WriteFile(path, []byte(p.Roff), 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

// manCommand is `qbox man DIR`: hidden, for `make man` and packagers.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Usage:     "write the manual pages (qbox(1), one per command and personality) into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return exitcode.Usage("usage: qbox man DIR")
			}
			files, err := WriteManPages(c.App, c.Args().First())
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintln(c.App.Writer, f)
			}
			return nil
		},
	}
}
