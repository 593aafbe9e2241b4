//go:build urfave_cli_no_docs

package commands

import (
	"github.com/urfave/cli/v2"

	"qbox/commands/exitcode"
)

// manCommand in a build without the man page generator: it says where the
// pages come from instead.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "write the manual pages into DIR (not in this build: run make man)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			return exitcode.Usage("this qbox was built without the man page generator; run 'make man' in the source tree")
		},
	}
}
