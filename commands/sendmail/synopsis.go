package sendmail

// The synopses of the personalities whose command line can be wrong:
// their man pages' SYNOPSIS, and what `sendmail --help` and
// `qmail-inject --help` print (the shipped binary has no man pages).
const (
	SendmailSynopsis = `sendmail [-t] [-i] [-f SENDER] [-F NAME] [-v] [RECIPIENT ...] < message
sendmail -bs
sendmail -bp
sendmail -q [-v]`
	QmailInjectSynopsis = `qmail-inject [-aAhHnN] [-f SENDER] [RECIPIENT ...] < message`
)
