// Command qbox is a toolbox for D. J. Bernstein's fast mail protocols, QMQP
// and QMTP. Run under another name (a symlink) it behaves as that program:
// sendmail, qmail-inject, qmail-qmqpc, mailq or maildirqmtp.
package main

import (
	"os"

	"qbox/commands"
)

func main() {
	os.Exit(commands.Main(os.Args))
}
