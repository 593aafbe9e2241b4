package commands

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Help and man pages show a flag as its names with what it takes
// ("--connect-timeout DURATION", "--server HOST[:PORT], -s HOST[:PORT]")
// and its usage with a default only when there is one worth saying:
// urfave/cli's own rendering adds "(default: false)" to every switch,
// "value" where a flag's usage names no placeholder, a repeated copy of
// a repeatable flag's names, and `="":` in man pages.
func init() { cli.FlagStringer = flagString }

// flagPlaceholder is what a flag takes: the `WORD` its usage names, else
// one said by its type; "" for a switch.
func flagPlaceholder(f cli.DocGenerationFlag) string {
	if !f.TakesValue() {
		return ""
	}
	if name, _ := unquoteUsage(f.GetUsage()); name != "" {
		return name
	}
	switch f.(type) {
	case *cli.DurationFlag:
		return "DURATION"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		return "N"
	}
	return "VALUE"
}

// flagNames is "--name P, -n P" (P the placeholder, when there is one).
func flagNames(f cli.DocGenerationFlag, placeholder string) string {
	var names []string
	for _, n := range f.Names() {
		s := "--" + n
		if len(n) == 1 {
			s = "-" + n
		}
		if placeholder != "" {
			s += " " + placeholder
		}
		names = append(names, s)
	}
	return strings.Join(names, ", ")
}

// flagDefault is the default worth showing: none for a switch (off is
// what a switch is when not given), an empty value or an empty list.
func flagDefault(f cli.DocGenerationFlag) string {
	if !f.TakesValue() {
		return ""
	}
	d := f.GetDefaultText()
	if d == `""` || d == "[]" {
		return ""
	}
	return strings.Trim(d, `"`)
}

// flagString renders a flag for --help: names, a tab, the usage.
func flagString(f cli.Flag) string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return ""
	}
	_, usage := unquoteUsage(df.GetUsage())
	if d := flagDefault(df); d != "" {
		usage += " (default: " + d + ")"
	}
	if env := df.GetEnvVars(); len(env) > 0 {
		usage += " [$" + strings.Join(env, ", $") + "]"
	}
	return flagNames(df, flagPlaceholder(df)) + "\t" + strings.TrimSpace(usage)
}

// manFlags puts each value flag's placeholder where urfave/cli's man page
// renderer writes `=""` after its names, and unquotes string defaults.
func manFlags(roff string, flags []cli.Flag) string {
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if !ok || !df.TakesValue() {
			continue
		}
		bare := flagNames(df, "")
		roff = strings.ReplaceAll(roff, `\fB`+bare+`\fP="": `, `\fB`+bare+`\fP \fI`+flagPlaceholder(df)+`\fP: `)
		if d := df.GetDefaultText(); len(d) > 2 && d[0] == '"' {
			roff = strings.ReplaceAll(roff, "(default: "+d+")", "(default: "+flagDefault(df)+")")
		}
	}
	return roff
}

// unquoteUsage takes the `WORD` a usage names as its placeholder out of
// its backquotes: ("WORD", the usage with WORD unquoted), as urfave/cli
// does.
func unquoteUsage(usage string) (string, string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name := usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+2+j:]
}

// completeVisibleFlags makes shell completion offer only the flags help
// shows: urfave/cli's own completion offers hidden flags (old names kept
// as aliases) unless they are switches.
func completeVisibleFlags(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.BashComplete == nil {
			var visible []cli.Flag
			for _, f := range c.Flags {
				if v, ok := f.(cli.VisibleFlag); !ok || v.IsVisible() {
					visible = append(visible, f)
				}
			}
			c.BashComplete = cli.DefaultCompleteWithFlags(&cli.Command{Flags: visible, Subcommands: c.Subcommands})
		}
		completeVisibleFlags(c.Subcommands)
	}
}
