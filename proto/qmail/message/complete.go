package message

import (
	"fmt"
	"strings"
)

// addressFields are the header fields whose addresses qmail-inject
// completes in the header itself (qmail-inject.c's doheaderfield: the
// recipient fields, and the sender fields it rewrites with rwsender).
var addressFields = map[string]bool{
	"to": true, "cc": true, "bcc": true, "apparently-to": true,
	"resent-to": true, "resent-cc": true, "resent-bcc": true,
	"sender": true, "from": true, "reply-to": true,
	"return-receipt-to": true, "errors-to": true,
	"resent-sender": true, "resent-from": true, "resent-reply-to": true,
}

// edit replaces text[start:end] with repl.
type edit struct {
	start, end int
	repl       string
}

// completeAddresses returns an address field's value with every address
// completed as the envelope's are (cfg.Rewrite): a bare box gets
// @DefaultHost, a dotless host .DefaultDomain, a trailing '+' the
// PlusDomain. Only the host parts change; display names, comments,
// quoting, folding and spacing stay as written. Two bare words that
// qmail reads as two addresses ("To: joe fred") get the comma that makes
// them two for every other reader too.
//
// A value that does not parse, or that holds a CR, LF or NUL other than
// a fold, is returned unchanged, as qmail-inject keeps a field it cannot
// parse (checkField refuses it when its addresses are wanted). A
// completion that would put CR, LF or NUL into the field (from the
// environment's host names) is refused.
func completeAddresses(value string, cfg Config) (string, error) {
	end := len(value)
	if end > 0 && value[end-1] == '\n' {
		end--
		if end > 0 && value[end-1] == '\r' {
			end--
		}
	}
	// Unfold without moving a byte, so token offsets index value.
	work := []byte(value[:end])
	for i := 0; i < len(work); i++ {
		if work[i] == '\n' && i+1 < len(work) && (work[i+1] == ' ' || work[i+1] == '\t') {
			work[i] = ' '
			if i > 0 && work[i-1] == '\r' {
				work[i-1] = ' '
			}
		}
	}
	if strings.ContainsAny(string(work), "\r\n\x00") {
		return value, nil
	}
	toks, err := tokenize(string(work))
	if err != nil {
		return value, nil
	}
	var edits []edit
	var bad error
	add := func(run []token, comma bool) {
		e, ok, err := completeSpec(run, cfg)
		if err != nil && bad == nil {
			bad = err
		}
		if ok {
			if comma {
				e.repl += ","
			}
			edits = append(edits, e)
		} else if comma && len(run) > 0 {
			last := run[len(run)-1].end
			edits = append(edits, edit{start: last, end: last, repl: ","})
		}
	}
	err = walkAddressList(toks,
		func(run []token) {
			specs := bareSpecs(run)
			for i, spec := range specs {
				// "joe fred" becomes "joe@host, fred@host".
				add(spec, i < len(specs)-1)
			}
		},
		func(inner []token) { add(inner, false) })
	if err != nil {
		return value, nil // not an address list: left as it is
	}
	if bad != nil {
		return "", bad
	}
	if len(edits) == 0 {
		return value, nil
	}
	var b strings.Builder
	at := 0
	for _, e := range edits {
		b.WriteString(value[at:e.start])
		b.WriteString(e.repl)
		at = e.end
	}
	b.WriteString(value[at:])
	return b.String(), nil
}

// completeSpec returns the edit that completes one addr-spec's host, if
// it needs one.
func completeSpec(run []token, cfg Config) (edit, bool, error) {
	if len(run) == 0 {
		return edit{}, false, nil
	}
	at := -1
	for i, t := range run {
		if t.is("@") {
			at = i
		}
	}
	var host, done string
	e := edit{}
	if at < 0 {
		if cfg.DefaultHost == "" {
			return edit{}, false, nil
		}
		done = hostOf(cfg.Rewrite("x"))
		e.start, e.end = run[len(run)-1].end, run[len(run)-1].end
		done = "@" + done
	} else {
		hostToks := run[at+1:]
		if len(hostToks) == 0 {
			return edit{}, false, nil // "box@": nothing sensible to add
		}
		host = addrSpec(hostToks)
		if host == "[]" {
			return edit{}, false, nil
		}
		done = hostOf(cfg.Rewrite("x@" + host))
		if done == host {
			return edit{}, false, nil
		}
		e.start, e.end = hostToks[0].start, hostToks[len(hostToks)-1].end
	}
	if strings.ContainsAny(done, "\r\n\x00") {
		return edit{}, false, &RefusedError{What: "default host or domain ($QMAILDEFAULTHOST, $QMAILDEFAULTDOMAIN, $QMAILPLUSDOMAIN, control files)",
			Caller: true, Err: fmt.Errorf("%w", ErrHeaderBytes)}
	}
	e.repl = done
	return e, true, nil
}

// hostOf returns the host of an address cfg.Rewrite made from "x" or
// "x@host": everything after "x@" (a host may itself hold an '@').
func hostOf(addr string) string { return strings.TrimPrefix(addr, "x@") }

// completeField returns f with its addresses completed when it is one of
// the address fields qmail-inject rewrites.
func completeField(f field, cfg Config) (field, error) {
	if !addressFields[f.name] {
		return f, nil
	}
	i := strings.IndexByte(f.text, ':')
	v, err := completeAddresses(f.text[i+1:], cfg)
	if err != nil {
		return f, err
	}
	f.text = f.text[:i+1] + v
	return f, nil
}
