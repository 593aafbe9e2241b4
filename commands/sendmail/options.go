package sendmail

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"qbox/proto/queue/spool"
)

// Mode is what a sendmail invocation asks for.
type Mode int

const (
	ModeDeliver Mode = iota // -bm, the default: read a message, send it
	ModeList                // -bp: list the spool (mailq)
	ModeSMTP                // -bs: an SMTP session on stdin/stdout
	ModeFlush               // -q: deliver the spool
	ModeNoop                // -bi (newaliases): nothing to do, succeed
)

// Options is a parsed sendmail command line.
type Options struct {
	Mode        Mode
	ReadHeader  bool   // -t: recipients from To/Cc/Bcc (Resent-*) as well
	IgnoreDots  bool   // -i, -oi: a lone "." is not the end (always true for us)
	Sender      string // -f/-r, without surrounding <>; "" with SenderSet is the null sender
	SenderSet   bool
	FullName    string // -F
	FullNameSet bool
	Verbose     bool // -v
	// QueueInterval is -q30m's interval: run the queue every interval
	// in the foreground (0: once, now).
	QueueInterval time.Duration
	// QueueSelect holds each -qI, -qR or -qS with its substring
	// ("Rexample.com", "!Sroot"); see spool.ParseSelection.
	QueueSelect []string
	Daemon      bool // -bd: with -q30m, the queue runner; alone, unsupported
	Recipients  []string
	// MaxRecipients is -O MaxRecipientsPerMessage=N (sendmail's option
	// name): more recipients are refused (64), never cut; 0: the
	// control file's limit or spool.DefaultMaxRecipients.
	MaxRecipients int
	// Warnings are about options accepted but not understood; the
	// caller prints them and carries on, because an MTA that refuses an
	// unknown option (cron's -oem, mutt's -N) loses the caller's mail.
	Warnings []string
	// UsageError is set for the few invocations that cannot mean
	// "deliver this message" (an unknown -b mode): the caller exits 64.
	UsageError string
}

// Options whose argument is the rest of the word or, when nothing is
// attached, the next word. -A (sendmail's -Ac/-Am), -C (configuration
// file) and -h (hop count) are sendmail's; they are listed so their
// argument is not mistaken for a recipient.
const withArgument = "fFrobNRVLOXBepChA"

// ParseOptions parses sendmail's arguments (without argv[0]) the lenient
// way: unknown options produce a warning, never a failure; parsing stops
// at "--" or at the first word that is not an option, and every word
// after that is a recipient.
func ParseOptions(args []string) *Options {
	o := &Options{}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break // "-" alone or a recipient: options end here
		}
		if arg[1] == '-' {
			o.warn("unknown option %q ignored", arg)
			continue
		}
		// A cluster of letters, as getopt reads them: "-ti", "-oem",
		// "-FCronDaemon".
	letters:
		for j := 1; j < len(arg); j++ {
			c := arg[j]
			if strings.IndexByte(withArgument, c) >= 0 {
				val, ok := optionValue(args, &i, j)
				if !ok {
					o.warn("option -%c needs an argument; ignored", c)
					break letters
				}
				o.option(c, val)
				break letters
			}
			switch c {
			case 't':
				o.ReadHeader = true
			case 'i':
				o.IgnoreDots = true
			case 'v':
				o.Verbose = true
			case 'm', 'x', 'U', 'G', 'n':
				// -m (me too), -x, -U (initial submission), -G
				// (gateway), -n (no aliasing): nothing to do.
			case 'E', 'J':
				break letters // qmail's wrapper: swallow the rest
			case 'q':
				// -q: flush once, now; -q30m: every 30 minutes;
				// -qI, -qR, -qS: select (see QueueSelect).
				o.Mode = ModeFlush
				o.queueArgument(arg[j+1:])
				break letters
			default:
				o.warn("unknown option -%c ignored", c)
				// The rest of the word may be this option's argument
				// (sendmail's -d0.1, -A c): skip it rather than read
				// it as more letters.
				break letters
			}
		}
	}
	o.Recipients = append(o.Recipients, args[i:]...)
	return o
}

// optionValue returns the argument of the option letter at args[*i][j],
// as getopt reads it: the rest of the word when there is one, else the
// next word (advancing *i past it); false when there is neither.
func optionValue(args []string, i *int, j int) (string, bool) {
	if val := args[*i][j+1:]; val != "" {
		return val, true
	}
	if *i+1 >= len(args) {
		return "", false
	}
	*i++
	return args[*i], true
}

func (o *Options) option(c byte, val string) {
	switch c {
	case 'f', 'r':
		o.Sender, o.SenderSet = unbracket(val), true
	case 'F':
		o.FullName, o.FullNameSet = val, true
	case 'o':
		if strings.HasPrefix(val, "i") {
			o.IgnoreDots = true // -oi
		}
	case 'O':
		if v, ok := strings.CutPrefix(val, "MaxRecipientsPerMessage="); ok {
			n, err := spool.ParseMaxRecipients(v)
			if err != nil {
				o.UsageError = "-O MaxRecipientsPerMessage: " + err.Error()
				return
			}
			o.MaxRecipients = n
		}
	case 'b':
		switch val {
		case "m":
			o.Mode = ModeDeliver
		case "p":
			o.Mode = ModeList
		case "s":
			o.Mode = ModeSMTP
		case "i":
			o.Mode = ModeNoop // newaliases: qbox keeps no aliases
		case "d":
			o.Daemon = true // only -bd -q30m means something to qbox
		default:
			if o.UsageError == "" {
				o.UsageError = fmt.Sprintf("-b%s is not supported (only -bm, -bp, -bs and -bi)", val)
			}
		}
	case 'C':
		// Another configuration file: qbox has none, so say so.
		o.warn("option -C %s ignored (qbox reads no sendmail configuration)", val)
	default:
		// -A c|m, -h hops, -N dsn, -R ret, -V envid, -L tag, -O
		// opt=val, -X log, -B type, -e x, -p proto: accepted and ignored
		// without a word (cron and mail programs pass them on every run;
		// a warning would be mailed every time). README and sendmail(8)
		// list the same set.
	}
}

// unbracket turns "<addr>" into "addr" and "<>" into "" (the null sender).
// Only spaces and tabs around it are dropped: a CR or LF stays, for
// message.Prepare to refuse the address (TrimSpace would quietly turn
// "me@x\r" into another address than the one given).
func unbracket(s string) string {
	s = strings.Trim(s, " \t")
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return strings.Trim(s[1:len(s)-1], " \t")
	}
	return s
}

// queueArgument reads what follows -q: an interval in sendmail's units
// (s, m, h, d, w; a bare number is minutes), or a selection (I, R or S
// and a substring, optionally negated with '!').
func (o *Options) queueArgument(v string) {
	if v == "" {
		return
	}
	sel := strings.TrimPrefix(v, "!")
	if sel != "" && strings.IndexByte("IRS", sel[0]) >= 0 {
		o.QueueSelect = append(o.QueueSelect, v)
		return
	}
	v = strings.TrimPrefix(v, "p") // -qp30m: persistent, the same to us
	if v == "" {
		return
	}
	d, err := parseInterval(v)
	if err != nil {
		o.warn("-q%s: %v; flushing once", v, err)
		return
	}
	o.QueueInterval = d
}

// parseInterval reads sendmail's time format: numbers, each followed by
// a unit (s, m, h, d, w), a bare number being minutes ("30m", "1h30m",
// "15").
func parseInterval(v string) (time.Duration, error) {
	var total time.Duration
	for v != "" {
		i := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == 0 || i > 6 {
			return 0, fmt.Errorf("%q is not an interval (30m, 1h, 2d)", v)
		}
		n, _ := strconv.Atoi(v[:i])
		unit := time.Minute
		if i < len(v) {
			switch v[i] {
			case 's':
				unit = time.Second
			case 'm':
				unit = time.Minute
			case 'h':
				unit = time.Hour
			case 'd':
				unit = 24 * time.Hour
			case 'w':
				unit = 7 * 24 * time.Hour
			default:
				return 0, fmt.Errorf("unknown unit %q (s, m, h, d, w)", v[i])
			}
			i++
		}
		total += time.Duration(n) * unit
		v = v[i:]
	}
	if total <= 0 {
		return 0, fmt.Errorf("an interval of 0")
	}
	return total, nil
}

func (o *Options) warn(format string, a ...any) {
	o.Warnings = append(o.Warnings, fmt.Sprintf(format, a...))
}

// RecipientSource is where qmail-inject takes recipients from.
type RecipientSource int

const (
	RecipientsDefault RecipientSource = iota // -A: the arguments if any, else the header
	RecipientsArgs                           // -a: the arguments only
	RecipientsHeader                         // -h: the header only
	RecipientsBoth                           // -H: the header and the arguments
)

// InjectOptions is a parsed qmail-inject command line.
type InjectOptions struct {
	Recipients RecipientSource
	Print      bool // -n: print the message instead of sending it
	Sender     string
	SenderSet  bool
	Args       []string
}

// ParseInjectOptions parses qmail-inject's options (getopt "aAhHnNf:"):
// strict, as qmail-inject is, because its callers are scripts written for
// it; an unknown option is a usage error.
func ParseInjectOptions(args []string) (*InjectOptions, error) {
	o := &InjectOptions{}
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
	letters:
		for j := 1; j < len(arg); j++ {
			switch c := arg[j]; c {
			case 'a':
				o.Recipients = RecipientsArgs
			case 'A':
				o.Recipients = RecipientsDefault
			case 'h':
				o.Recipients = RecipientsHeader
			case 'H':
				o.Recipients = RecipientsBoth
			case 'n':
				o.Print = true
			case 'N':
				o.Print = false
			case 'f':
				val, ok := optionValue(args, &i, j)
				if !ok {
					return nil, fmt.Errorf("option -f needs an argument")
				}
				o.Sender, o.SenderSet = unbracket(val), true
				break letters
			default:
				return nil, fmt.Errorf("unknown option -%c (usage: qmail-inject [-aAhHnN] [-f sender] [recipient ...])", c)
			}
		}
	}
	o.Args = append(o.Args, args[i:]...)
	return o, nil
}
