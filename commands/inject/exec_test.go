package inject

import (
	"bytes"
	"os/exec"
)

func execOutput(prog string, env []string, args ...string) (string, error) {
	cmd := exec.Command(prog, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}
