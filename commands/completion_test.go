package commands

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"qbox/commands/exitcode"
	"qbox/proto/testkit/testpeer"
)

// visibleCommands are the names `qbox --help` lists.
func visibleCommands(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, c := range App(nil, &bytes.Buffer{}, &bytes.Buffer{}).Commands {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	if len(names) < 5 {
		t.Fatalf("only %d commands: %v", len(names), names)
	}
	return names
}

func completion(t *testing.T, shell string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := App(nil, &stdout, &stderr).Run([]string{"qbox", "completion", shell}); err != nil {
		t.Fatalf("qbox completion %s: %v\n%s", shell, err, stderr.String())
	}
	return stdout.String()
}

// bashComplete loads `qbox completion bash` into bash, with the built qbox
// first on PATH, completes the words (the last one is the word being
// typed) and returns the candidates.
func bashComplete(t *testing.T, words ...string) []string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash, which runs the completion script: %v", err)
	}
	bin := filepath.Dir(testpeer.Binary(t))
	script := filepath.Join(t.TempDir(), "qbox.bash")
	if err := os.WriteFile(script, []byte(completion(t, "bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	var quoted []string
	for _, w := range words {
		quoted = append(quoted, "'"+strings.ReplaceAll(w, "'", `'\''`)+"'")
	}
	prog := "source " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n_qbox_complete\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c", prog)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "QMQPSERVERS=127.0.0.1:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completing %q: %v\n%s", words, err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("bash completing %q wrote to stderr: %s", words, stderr.String())
	}
	return strings.Fields(string(out))
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The bash script, run by bash, completes qbox's commands, a command's
// flags, and never runs a command while completing.
func TestCompletionBash(t *testing.T) {
	got := bashComplete(t, "qbox", "")
	for _, name := range visibleCommands(t) {
		if !has(got, name) {
			t.Errorf("qbox <TAB>: %v lacks %s", got, name)
		}
	}
	if got := bashComplete(t, "qbox", "fl"); len(got) != 1 || got[0] != "flush-maildir" {
		t.Errorf("qbox fl<TAB>: %v, want flush-maildir", got)
	}
	if got := bashComplete(t, "qbox", "flush-maildir", "--gr"); len(got) != 1 || got[0] != "--group" {
		t.Errorf("qbox flush-maildir --gr<TAB>: %v, want --group", got)
	}
	// "--" alone would end the flags and run inject (reading the
	// terminal, sending mail): it must list inject's flags instead.
	got = bashComplete(t, "qbox", "inject", "--")
	for _, f := range []string{"--from", "--server", "--raw"} {
		if !has(got, f) {
			t.Errorf("qbox inject --<TAB>: %v lacks %s", got, f)
		}
	}
	// Past the command word, arguments are the shell's (files).
	if got := bashComplete(t, "qbox", "inject", "r@example.test", ""); len(got) != 0 {
		t.Errorf("qbox inject r@example.test <TAB>: %v, want nothing from qbox", got)
	}
	if got := bashComplete(t, "qbox", "inject", "--", "-"); len(got) != 0 {
		t.Errorf("qbox inject -- -<TAB>: %v, want nothing after --", got)
	}
}

// The zsh script asks qbox the same way; zsh is not installed here, so
// this checks the script's shape and the answers it relies on.
func TestCompletionZsh(t *testing.T) {
	script := completion(t, "zsh")
	for _, want := range []string{"#compdef qbox", "compdef _qbox qbox", "--generate-bash-completion", "_files"} {
		if !strings.Contains(script, want) {
			t.Errorf("zsh script lacks %q", want)
		}
	}
	out, err := exec.Command(testpeer.Binary(t), "--generate-bash-completion").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range visibleCommands(t) {
		if !has(strings.Fields(string(out)), name) {
			t.Errorf("qbox --generate-bash-completion: %q lacks %s", out, name)
		}
	}
}

// The fish script is generated: every command and its flags.
func TestCompletionFish(t *testing.T) {
	script := completion(t, "fish")
	for _, name := range visibleCommands(t) {
		if !strings.Contains(script, "-a '"+name+"'") {
			t.Errorf("fish script lacks command %s", name)
		}
	}
	for _, c := range App(nil, &bytes.Buffer{}, &bytes.Buffer{}).Commands {
		if c.Name != "flush-maildir" {
			continue
		}
		for _, f := range c.Flags {
			if !strings.Contains(script, "-l "+f.Names()[0]) {
				t.Errorf("fish script lacks flush-maildir --%s", f.Names()[0])
			}
		}
	}
	if strings.Contains(script, "'man'") {
		t.Error("fish script offers the hidden man command")
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(line, "complete ") && seen[line] {
			t.Errorf("fish script repeats %q", line)
		}
		seen[line] = true
		if i := strings.Index(line, "contains -- $i "); i >= 0 && strings.Count(line, " help ")+strings.Count(line, " help\n") > 1 {
			t.Errorf("fish script lists help twice: %q", line)
		}
	}
}

func TestCompletionUsage(t *testing.T) {
	for _, args := range [][]string{{"qbox", "completion"}, {"qbox", "completion", "tcsh"}} {
		var stderr bytes.Buffer
		err := App(nil, &bytes.Buffer{}, &stderr).Run(args)
		if status(err, exitcode.Qmail) != 100 || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q", args, status(err, exitcode.Qmail), stderr.String())
		}
	}
}

// Completion offers the flags help shows, not a hidden old name.
func TestCompletionOffersVisibleFlagsOnly(t *testing.T) {
	bin := testpeer.Binary(t)
	out, err := exec.Command(bin, "inject", "--t", "--generate-bash-completion").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "--timeout\n") || strings.Contains(string(out), "timeout-connect") {
		t.Errorf("completing inject --t: %q; want --timeout and not the hidden --timeout-connect", out)
	}
}
