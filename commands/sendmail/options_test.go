package sendmail

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Options
	}{
		{
			name: "cron (cronie)",
			args: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
			want: Options{ReadHeader: true, IgnoreDots: true, Sender: "root", SenderSet: true, FullName: "CronDaemon", FullNameSet: true},
		},
		{
			name: "PHP mail()",
			args: []string{"-t", "-i"},
			want: Options{ReadHeader: true, IgnoreDots: true},
		},
		{
			name: "git send-email",
			args: []string{"-i", "alice@example.test", "bob@example.test"},
			want: Options{IgnoreDots: true, Recipients: []string{"alice@example.test", "bob@example.test"}},
		},
		{
			name: "mutt with DSN",
			args: []string{"-oem", "-oi", "-N", "failure,delay", "--", "carol@example.test"},
			want: Options{IgnoreDots: true, Recipients: []string{"carol@example.test"}},
		},
		{
			name: "mutt 8bit and envelope from",
			args: []string{"-B8BITMIME", "-oem", "-oi", "-f", "me@example.test", "--", "-dash@example.test"},
			want: Options{IgnoreDots: true, Sender: "me@example.test", SenderSet: true, Recipients: []string{"-dash@example.test"}},
		},
		{
			name: "attached -f",
			args: []string{"-fme@example.test", "x@example.test"},
			want: Options{Sender: "me@example.test", SenderSet: true, Recipients: []string{"x@example.test"}},
		},
		{
			name: "null sender empty",
			args: []string{"-f", "", "x"},
			want: Options{SenderSet: true, Recipients: []string{"x"}},
		},
		{
			name: "null sender brackets",
			args: []string{"-f", "<>", "x"},
			want: Options{SenderSet: true, Recipients: []string{"x"}},
		},
		{
			name: "attached null sender brackets",
			args: []string{"-f<>", "x"},
			want: Options{SenderSet: true, Recipients: []string{"x"}},
		},
		{
			name: "bracketed sender",
			args: []string{"-f", "<me@example.test>", "x"},
			want: Options{Sender: "me@example.test", SenderSet: true, Recipients: []string{"x"}},
		},
		{
			name: "-r as -f",
			args: []string{"-r", "bounces@example.test", "x"},
			want: Options{Sender: "bounces@example.test", SenderSet: true, Recipients: []string{"x"}},
		},
		{
			name: "-F separate, kept with -f",
			args: []string{"-F", "Full Name", "-f", "u@h", "x"},
			want: Options{Sender: "u@h", SenderSet: true, FullName: "Full Name", FullNameSet: true, Recipients: []string{"x"}},
		},
		{
			name: "clustered flags",
			args: []string{"-tiv"},
			want: Options{ReadHeader: true, IgnoreDots: true, Verbose: true},
		},
		{
			name: "-bm",
			args: []string{"-bm", "x"},
			want: Options{Mode: ModeDeliver, Recipients: []string{"x"}},
		},
		{
			name: "-bp",
			args: []string{"-bp"},
			want: Options{Mode: ModeList},
		},
		{
			name: "-b p separate",
			args: []string{"-b", "p"},
			want: Options{Mode: ModeList},
		},
		{
			name: "-bs",
			args: []string{"-bs"},
			want: Options{Mode: ModeSMTP},
		},
		{
			name: "-q",
			args: []string{"-q"},
			want: Options{Mode: ModeFlush},
		},
		{
			name: "-q with interval",
			args: []string{"-q30m"},
			want: Options{Mode: ModeFlush, QueueInterval: 30 * time.Minute},
		},
		{
			name: "-bd -q1h30m: the queue runner",
			args: []string{"-bd", "-q1h30m"},
			want: Options{Mode: ModeFlush, Daemon: true, QueueInterval: 90 * time.Minute},
		},
		{
			name: "-q15: minutes",
			args: []string{"-q15"},
			want: Options{Mode: ModeFlush, QueueInterval: 15 * time.Minute},
		},
		{
			name: "-qRexample.com selects",
			args: []string{"-qRexample.com"},
			want: Options{Mode: ModeFlush, QueueSelect: []string{"Rexample.com"}},
		},
		{
			name: "-bi newaliases",
			args: []string{"-bi"},
			want: Options{Mode: ModeNoop},
		},
		{
			name: "unsupported mode",
			args: []string{"-bv", "x"},
			want: Options{Recipients: []string{"x"}, UsageError: "-bv is not supported (only -bm, -bp, -bs and -bi)"},
		},
		{
			name: "ignored with attached argument",
			args: []string{"-Nnever", "-Rhdrs", "-Venvid", "-Ltag", "-OTimeout=1", "-X/tmp/log", "-B7BIT", "-em", "-pESMTP", "-m", "-x", "-odb", "-oem", "x"},
			want: Options{Recipients: []string{"x"}},
		},
		{
			name: "ignored with separate argument",
			args: []string{"-N", "never", "-R", "full", "-V", "id", "-L", "tag", "-O", "A=B", "-X", "log", "-B", "8BITMIME", "-e", "m", "-p", "x:y", "x"},
			want: Options{Recipients: []string{"x"}},
		},
		{
			// README's "accepted and ignored": no warning, which cron
			// would mail on every run.
			name: "accepted and ignored, silently",
			args: []string{"-Ac", "-A", "m", "-h", "3", "-h5", "-odi", "-oem", "-Nfailure,delay", "-Rhdrs", "-U", "-G", "-n", "-m", "-x", "-i", "x"},
			want: Options{IgnoreDots: true, Recipients: []string{"x"}},
		},
		{
			name: "-E and -J swallow the rest",
			args: []string{"-Eanything", "-Jt", "x"},
			want: Options{Recipients: []string{"x"}},
		},
		{
			name: "unknown option warns and continues",
			args: []string{"-Z", "-t", "x"},
			want: Options{ReadHeader: true, Recipients: []string{"x"}, Warnings: []string{"unknown option -Z ignored"}},
		},
		{
			name: "unknown long option warns",
			args: []string{"--frobnicate", "x"},
			want: Options{Recipients: []string{"x"}, Warnings: []string{`unknown option "--frobnicate" ignored`}},
		},
		{
			name: "missing argument at the end",
			args: []string{"-t", "-f"},
			want: Options{ReadHeader: true, Warnings: []string{"option -f needs an argument; ignored"}},
		},
		{
			name: "-C consumes its argument",
			args: []string{"-C", "/etc/mail/sendmail.cf", "x"},
			want: Options{Recipients: []string{"x"}, Warnings: []string{"option -C /etc/mail/sendmail.cf ignored (qbox reads no sendmail configuration)"}},
		},
		{
			name: "parsing stops at the first non-option",
			args: []string{"x@example.test", "-t", "-f", "y"},
			want: Options{Recipients: []string{"x@example.test", "-t", "-f", "y"}},
		},
		{
			name: "a lone dash is not an option",
			args: []string{"-", "x"},
			want: Options{Recipients: []string{"-", "x"}},
		},
		{
			name: "double dash then options as recipients",
			args: []string{"-i", "--", "-t"},
			want: Options{IgnoreDots: true, Recipients: []string{"-t"}},
		},
		{
			name: "no arguments",
			args: nil,
			want: Options{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseOptions(tc.args)
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("ParseOptions(%q)\n got %+v\nwant %+v", tc.args, *got, tc.want)
			}
		})
	}
}

func TestParseQmailInjectOptions(t *testing.T) {
	tests := []struct {
		args    []string
		want    InjectOptions
		wantErr bool
	}{
		{args: nil, want: InjectOptions{Recipients: RecipientsDefault}},
		{args: []string{"a@b"}, want: InjectOptions{Recipients: RecipientsDefault, Args: []string{"a@b"}}},
		{args: []string{"-a", "a@b"}, want: InjectOptions{Recipients: RecipientsArgs, Args: []string{"a@b"}}},
		{args: []string{"-h"}, want: InjectOptions{Recipients: RecipientsHeader}},
		{args: []string{"-H", "a"}, want: InjectOptions{Recipients: RecipientsBoth, Args: []string{"a"}}},
		{args: []string{"-A"}, want: InjectOptions{Recipients: RecipientsDefault}},
		{args: []string{"-n"}, want: InjectOptions{Recipients: RecipientsDefault, Print: true}},
		{args: []string{"-n", "-N"}, want: InjectOptions{Recipients: RecipientsDefault}},
		{args: []string{"-f", "", "a"}, want: InjectOptions{Recipients: RecipientsDefault, SenderSet: true, Args: []string{"a"}}},
		{args: []string{"-fme", "--", "-a"}, want: InjectOptions{Recipients: RecipientsDefault, Sender: "me", SenderSet: true, Args: []string{"-a"}}},
		{args: []string{"-Hn", "x"}, want: InjectOptions{Recipients: RecipientsBoth, Print: true, Args: []string{"x"}}},
		{args: []string{"-t"}, wantErr: true},
		{args: []string{"-f"}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseInjectOptions(tc.args)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseInjectOptions(%q) error = %v, want error %v", tc.args, err, tc.wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseInjectOptions(%q)\n got %+v\nwant %+v", tc.args, *got, tc.want)
		}
	}
}

// FuzzParseOptions: any command line parses without panicking, and every
// word after the options is kept as a recipient in order.
func FuzzParseOptions(f *testing.F) {
	for _, seed := range []string{
		"-FCronDaemon -i -odi -oem -oi -t -f root",
		"-t -i",
		"-i a@b c@d",
		"-oem -oi -N failure,delay -- addr",
		"-f", "-bs", "-bp", "-q1h", "-f<> x", "--", "- x", "-E -J -x", "-bz", "-Cfile -h 3",
	} {
		f.Add(strings.ReplaceAll(seed, " ", "\x00"))
	}
	f.Fuzz(func(t *testing.T, line string) {
		var args []string
		if line != "" {
			args = strings.Split(line, "\x00")
		}
		o := ParseOptions(args)
		if len(o.Recipients) > len(args) {
			t.Fatalf("%d recipients from %d words", len(o.Recipients), len(args))
		}
		tail := args[len(args)-len(o.Recipients):]
		if !reflect.DeepEqual(tail, o.Recipients) && len(o.Recipients) > 0 {
			t.Fatalf("recipients %q are not the tail of %q", o.Recipients, args)
		}
		if _, err := ParseInjectOptions(args); err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}
