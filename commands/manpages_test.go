//go:build !urfave_cli_no_docs

package commands

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
)

// roffRequests are the requests a generated page may use; anything else
// on a line starting with "." or "'" would be a typo, or text that roff
// would swallow as a request.
var roffRequests = map[string]bool{
	"TH": true, "nh": true, "SH": true, "SS": true, "PP": true, "EX": true, "EE": true,
	"br": true, "TP": true, "IP": true, "RS": true, "RE": true, "B": true, "I": true, "ti": true,
}

// checkRoff fails unless page is a man page: .TH first with the name and
// section, NAME and SYNOPSIS sections, known requests only, font changes
// closed on the line that opens them.
func checkRoff(t *testing.T, file, page, name string, section string) {
	t.Helper()
	lines := strings.Split(page, "\n")
	if want := `.TH "` + strings.ToUpper(name) + `" "` + section + `" `; !strings.HasPrefix(lines[0], want) {
		t.Errorf("%s: first line %q, want it to start with %q", file, lines[0], want)
	}
	for _, sh := range []string{".SH NAME\n" + name + ` \- `, "\n.SH SYNOPSIS\n", "\n.SH DESCRIPTION\n", "\n.SH SEE ALSO\n"} {
		if !strings.Contains(page, sh) {
			t.Errorf("%s: no %q", file, sh)
		}
	}
	if strings.Contains(page, "GLOBAL OPTIONS") {
		t.Errorf("%s: a command's flags are its OPTIONS, not GLOBAL OPTIONS", file)
	}
	for i, l := range lines {
		if strings.HasPrefix(l, "'") {
			t.Errorf("%s:%d: line starts with ': %q", file, i+1, l)
		}
		if strings.HasPrefix(l, ".") {
			req := strings.Fields(l[1:])
			if len(req) == 0 || !roffRequests[req[0]] {
				t.Errorf("%s:%d: unknown request %q", file, i+1, l)
			}
		}
		if strings.Count(l, `\fB`)+strings.Count(l, `\fI`) != strings.Count(l, `\fP`)+strings.Count(l, `\fR`) {
			t.Errorf("%s:%d: font change not closed: %q", file, i+1, l)
		}
	}
}

// `qbox man DIR` writes qbox(1), a page per visible command with every
// one of its flags, and a page per personality and per other name one is
// installed under (qmail-queue).
func TestManWritesOnePagePerCommandAndPersonality(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man")
	var stdout, stderr bytes.Buffer
	app := App(strings.NewReader(""), &stdout, &stderr)
	if err := app.Run([]string{"qbox", "man", dir}); err != nil {
		t.Fatalf("qbox man: %v\n%s", err, stderr.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	if got := strings.Fields(stdout.String()); len(got) != len(files) {
		t.Errorf("qbox man printed %d paths, wrote %d files", len(got), len(files))
	}
	want := map[string]*cli.Command{"qbox.1": nil}
	for _, c := range app.Commands {
		if c.Hidden || c.Name == "help" {
			continue
		}
		sec := "1"
		if c.Name == "serve" {
			sec = "8"
		}
		want["qbox-"+c.Name+"."+sec] = c
	}
	names := slices.Collect(maps.Keys(Personalities))
	for alias := range Aliases {
		names = append(names, alias) // qmail-queue has its own page too (issue 22)
	}
	for _, name := range names {
		var found []string
		for f := range files {
			if f == name+".1" || f == name+".8" {
				found = append(found, f)
			}
		}
		if len(found) != 1 {
			t.Errorf("personality %s: pages %v, want one in section 1 or 8", name, found)
			continue
		}
		want[found[0]] = nil
	}
	written := slices.Sorted(maps.Keys(files))
	if len(files) != len(want) {
		t.Errorf("pages written: %v; want one for qbox, each command and each personality or alias (%d)", written, len(want))
	}
	for f, c := range want {
		page, ok := files[f]
		if !ok {
			t.Errorf("no page %s among %v", f, written)
			continue
		}
		ext := filepath.Ext(f)
		checkRoff(t, f, page, strings.TrimSuffix(f, ext), ext[1:])
		if c == nil {
			continue
		}
		if !strings.Contains(page, `\fBqbox `+roffEscape(c.Name)+`\fR`) {
			t.Errorf("%s: the synopsis does not show the command as typed (qbox %s)", f, c.Name)
		}
		for _, fl := range c.Flags {
			if v, ok := fl.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue // a hidden old name, kept working, not taught
			}
			for _, n := range fl.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				if !strings.Contains(page, dash+n) {
					t.Errorf("%s: flag %s%s is not documented", f, dash, n)
				}
			}
		}
	}
	// No library artefacts: a value flag shows what it takes, not `=""`,
	// and a default is shown as it is typed.
	for f, page := range files {
		for _, bad := range []string{`="":`, `(default: "`, "(default: false)", "[value]"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s holds urfave/cli's %q", f, bad)
			}
		}
	}
	if !strings.Contains(files["qbox-inject.1"], `\fB--connect-timeout\fP \fIDURATION\fP: `) {
		t.Errorf("qbox-inject.1 does not show --connect-timeout DURATION")
	}
	// The overview names every command and every personality's page.
	for f := range want {
		ext := filepath.Ext(f)
		ref := roffEscape(strings.TrimSuffix(f, ext)) + "(" + ext[1:] + ")"
		if f != "qbox.1" && !strings.Contains(files["qbox.1"], ref) {
			t.Errorf("qbox.1 does not refer to %s", ref)
		}
	}
	// The personality pages document their own option syntax.
	for _, s := range []string{`\fBsendmail\fR \-bs`, `\-t`, `\-q`, "EXIT STATUS"} {
		if !strings.Contains(files["sendmail.8"], s) {
			t.Errorf("sendmail.8 lacks %q", s)
		}
	}
}

func TestManUsage(t *testing.T) {
	for _, args := range [][]string{{"qbox", "man"}, {"qbox", "man", "a", "b"}} {
		var stderr bytes.Buffer
		err := App(strings.NewReader(""), &bytes.Buffer{}, &stderr).Run(args)
		if status(err, exitcode.Qmail) != 100 || !strings.Contains(stderr.String(), "usage: qbox man DIR") {
			t.Errorf("%v: exit %d, stderr %q", args, status(err, exitcode.Qmail), stderr.String())
		}
	}
}

// The plain-text descriptions keep their meaning through Markdown and
// roff: markup characters print as written, indented lines stay
// verbatim, a lone upper-case line is a section.
func TestTextToMarkdownThroughRoff(t *testing.T) {
	text := `The sender from "Return-Path: <...>", then <addr> and a*b*c_d_ and [x](y) #1 & ~ | \n.
-t and --raw start lines.

   qbox flush-maildir ~alias/pppdir alias-ppp- 192.0.2.1
   0    K
        continued
After the example.

EXIT STATUS

0 ok`
	roff, err := (&cli.App{Name: "x", Description: textToMarkdown(text)}).ToManWithSection(1)
	if err != nil {
		t.Fatal(err)
	}
	shown := plain(roff)
	for _, want := range []string{
		`"Return-Path: <...>", then <addr> and a*b*c_d_ and [x](y) #1 & ~ | \n.` + "\n-t and --raw start lines.",
		".EX\nqbox flush-maildir ~alias/pppdir alias-ppp- 192.0.2.1\n0    K\n     continued\n.EE",
		".PP\nAfter the example.",
		".SH EXIT STATUS\n0 ok",
	} {
		if !strings.Contains(shown, want) {
			t.Errorf("roff lacks %q:\n%s", want, roff)
		}
	}
}

// plain undoes roff's escapes of hyphens, backslashes and zero-width
// breaks, to compare with the text as written.
func plain(roff string) string {
	return strings.NewReplacer(`\&`, "", `\-`, "-", `\\`, `\`, `\e`, `\`).Replace(roff)
}
