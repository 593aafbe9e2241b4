// Package manpage is the form in which a personality's package hands its
// manual page to qbox's man page generator (commands' `qbox man DIR`):
// plain text kept beside the parser it documents, rendered to roff by the
// generator, which collects every personality's pages.
package manpage

// A Page is one personality's manual page, as text. Each personality's
// package exports its pages (a ManPages slice) from a file built only
// without the tag urfave_cli_no_docs, as the generator is, so the shipped
// binary carries neither.
type Page struct {
	Name    string // the personality's name: sendmail, qmail-qmqpc, ...
	Section int    // 1 for a user command, 8 for a system one
	Usage   string // the one line of NAME, after "Name - "
	// Synopsis is the program as typed, one form a line.
	Synopsis string
	// Description is the plain text of DESCRIPTION and the sections
	// after it: paragraphs, indented lines kept verbatim (examples,
	// tables), a lone upper-case line a section heading (EXIT STATUS).
	Description string
	SeeAlso     []string // related pages besides qbox(1), as "name(section)"
}
