package commands

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
)

// The bash and zsh scripts ask qbox itself what may come next: urfave/cli
// answers a command line ending in --generate-bash-completion with the
// commands, or with the flags matching a word that starts with "-". They
// never pass a bare "--" (after it the completion flag would be an
// argument and the command would run), and past the command word they
// complete only flags, leaving the rest to the shell's file completion.
const bashCompletion = `# bash completion for qbox. Load it with
#   source <(qbox completion bash)
# or install it as /usr/share/bash-completion/completions/qbox.
_qbox_complete() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local -a words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	local w list
	COMPREPLY=()
	for w in "${words[@]}"; do
		[[ $w == -- ]] && return 0
	done
	if [[ $cur == -* ]]; then
		[[ $cur == -- ]] && cur=-
		list=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null </dev/null)
		cur=${COMP_WORDS[COMP_CWORD]}
	elif (( COMP_CWORD == 1 )); then
		list=$("${words[@]}" --generate-bash-completion 2>/dev/null </dev/null)
	else
		return 0
	fi
	COMPREPLY=($(compgen -W "$list" -- "$cur"))
}
complete -o bashdefault -o default -F _qbox_complete qbox
`

const zshCompletion = `#compdef qbox
# zsh completion for qbox. Load it with
#   source <(qbox completion zsh)
# (after compinit), or save it as _qbox in a directory of $fpath.
_qbox() {
	local cur=${words[CURRENT]}
	local -a before opts
	before=("${(@)words[1,CURRENT-1]}")
	if (( ${before[(I)--]} )); then
		_files
		return
	fi
	if [[ $cur == -* ]]; then
		local ask=$cur
		[[ $ask == -- ]] && ask=-
		opts=("${(@f)$("${(@)before}" "$ask" --generate-bash-completion 2>/dev/null </dev/null)}")
	elif (( CURRENT == 2 )); then
		opts=("${(@f)$("${(@)before}" --generate-bash-completion 2>/dev/null </dev/null)}")
	else
		_files
		return
	fi
	compadd -a opts
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
	_qbox "$@"
else
	compdef _qbox qbox
fi
`

// completionCommand is `qbox completion bash|zsh|fish`.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes qbox's commands and their flags:

   source <(qbox completion bash)       # in ~/.bashrc
   source <(qbox completion zsh)        # in ~/.zshrc, after compinit
   qbox completion fish > ~/.config/fish/completions/qbox.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return exitcode.Usage("usage: qbox completion bash|zsh|fish")
			}
			script, err := CompletionScript(c.App, c.Args().First())
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}

// CompletionScript returns the completion script for shell. The fish one
// is generated from app's commands and flags; bash and zsh ask qbox at
// completion time.
func CompletionScript(app *cli.App, shell string) (string, error) {
	switch strings.ToLower(shell) {
	case "bash":
		return bashCompletion, nil
	case "zsh":
		return zshCompletion, nil
	case "fish":
		script, err := app.ToFishCompletion()
		return withoutRepeats(script), err
	}
	return "", exitcode.Usage("no completion for %q: bash, zsh or fish", shell)
}

// withoutRepeats drops the lines and words urfave/cli's fish generator
// repeats once the app has been set up (help is added a second time):
// a repeated complete line, and repeated command names in the list.
func withoutRepeats(script string) string {
	var out []string
	seenLine := map[string]bool{}
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(line, "complete ") {
			if seenLine[line] {
				continue
			}
			seenLine[line] = true
		}
		if i := strings.Index(line, "contains -- $i "); i >= 0 {
			var words []string
			seen := map[string]bool{}
			for _, w := range strings.Fields(line[i+len("contains -- $i "):]) {
				if !seen[w] {
					seen[w] = true
					words = append(words, w)
				}
			}
			line = line[:i+len("contains -- $i ")] + strings.Join(words, " ")
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
