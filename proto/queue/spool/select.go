package spool

import (
	"fmt"
	"strings"

	"qbox/proto/store/maildir"
)

// Selection picks the messages of a flush as sendmail's -qI, -qR and -qS
// do: each criterion is a letter (I: the queue ID `qbox queue list`
// shows, R: a recipient, S: the sender) and a substring, matched without
// regard to case; "!" before the letter negates it. Criteria with the
// same letter are alternatives; different letters must all hold.
type Selection struct {
	crit []criterion
}

type criterion struct {
	letter byte
	text   string // lower case
	negate bool
}

// ParseSelection reads criteria such as "Rexample.com", "!Sroot",
// "I3f2a9c". An empty substring or another letter is an error.
func ParseSelection(specs []string) (*Selection, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	s := &Selection{}
	for _, spec := range specs {
		c := criterion{}
		rest, neg := strings.CutPrefix(spec, "!")
		c.negate = neg
		if rest == "" || strings.IndexByte("IRS", rest[0]) < 0 {
			return nil, fmt.Errorf("queue selection %q: want I, R or S and a text (-qIid, -qRdomain, -qSsender)", spec)
		}
		c.letter, c.text = rest[0], strings.ToLower(rest[1:])
		if c.text == "" {
			return nil, fmt.Errorf("queue selection %q: the text to match is empty", spec)
		}
		s.crit = append(s.crit, c)
	}
	return s, nil
}

// Match reports whether the queued file e is selected. The ID is the
// message's content hash, so it is computed (the file read) only when an
// I criterion asks for it; a file that cannot be read is not selected.
func (s *Selection) Match(e *maildir.Entry) bool {
	return s.match(func() (string, bool) {
		id, err := messageID(e)
		return id, err == nil
	}, e.Sender, e.Recipient)
}

// matchStored reports whether recipient rcpt of the stored message m is
// selected.
func (s *Selection) matchStored(m *stored, rcpt string) bool {
	return s.match(func() (string, bool) { return m.id, true }, m.sender, rcpt)
}

func (s *Selection) match(idOf func() (string, bool), sender, rcpt string) bool {
	if s == nil {
		return true
	}
	var id string
	idDone := false
	for _, letter := range []byte("IRS") {
		any, matched := false, false
		for _, c := range s.crit {
			if c.letter != letter {
				continue
			}
			any = true
			var field string
			switch letter {
			case 'I':
				if !idDone {
					var ok bool
					if id, ok = idOf(); !ok {
						return false // unreadable: selected by no ID, nor by "not that ID"
					}
					idDone = true
				}
				field = id
			case 'R':
				field = rcpt
			case 'S':
				field = sender
			}
			hit := field != "" && strings.Contains(strings.ToLower(field), c.text)
			if hit != c.negate {
				matched = true
			}
		}
		if any && !matched {
			return false
		}
	}
	return true
}
