package message

import (
	"fmt"
	"strings"

	"qbox/proto"
	"qbox/proto/qmail/control"
)

// SystemFromFile is the control file naming the address that mail from
// system users goes out as.
const SystemFromFile = "systemfrom"

// SystemUIDMax is the highest uid counted as a system user: Debian's
// UID_MIN is 1000, so root, daemon, www-data and the other service
// accounts are below it, people at or above it.
const SystemUIDMax = 999

// IsSystemUser reports whether uid is a system account (root included).
func IsSystemUser(uid int) bool { return uid >= 0 && uid <= SystemUIDMax }

// SystemFrom returns the address mail from system users goes out as:
// $QBOX_SYSTEM_FROM, else the first line of $QMAILHOME/control/systemfrom;
// "" when neither is set. An address that is no mailbox (no '@', or
// bytes no envelope may hold) is an error.
func SystemFrom(getenv func(string) string) (string, error) {
	addr := strings.TrimSpace(getenv("QBOX_SYSTEM_FROM"))
	from := "$QBOX_SYSTEM_FROM"
	if addr == "" {
		path := control.Path(getenv, SystemFromFile)
		var err error
		if addr, err = control.FirstLine(path); err != nil {
			return "", err
		}
		from = path
	}
	if addr == "" {
		return "", nil
	}
	local, host, ok := strings.Cut(addr, "@")
	if !ok || local == "" || host == "" || strings.ContainsAny(addr, " \t<>()\",;") {
		return "", fmt.Errorf("%s: %q is not an address like user@example.com", from, proto.Printable(addr, 200))
	}
	if err := proto.CheckSender(addr); err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	return addr, nil
}

// ApplySystemFrom makes addr both the envelope sender and the From of a
// message from a system user, so that a relay that insists on From being
// the authenticated user takes cron's and the daemons' mail: the From
// the message brings is replaced (a full name from -F or $NAME stays),
// a Return-Path is ignored, and a -f sender is overridden, except the
// null sender (a bounce stays a bounce).
func ApplySystemFrom(cfg *Config, opts *Options, addr string) {
	i := strings.LastIndexByte(addr, '@')
	local, host := addr[:i], addr[i+1:]
	cfg.User, cfg.Host = local, host
	cfg.SenderUser, cfg.SenderHost = local, host
	cfg.Flags.DeleteFrom = true
	cfg.Flags.IgnoreReturnPath = true
	if opts.Sender != nil && *opts.Sender != "" && *opts.Sender != "<>" {
		s := addr
		opts.Sender = &s
	}
}
