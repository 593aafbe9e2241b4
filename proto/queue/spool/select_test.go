package spool

import (
	"testing"

	"qbox/proto/store/maildir"
)

func TestParseSelection(t *testing.T) {
	for _, bad := range [][]string{{"X1"}, {"R"}, {"!"}, {""}, {"!I"}} {
		if _, err := ParseSelection(bad); err == nil {
			t.Errorf("ParseSelection(%q) accepted", bad)
		}
	}
	if s, err := ParseSelection(nil); s != nil || err != nil {
		t.Errorf("no criteria: %v %v, want nil (everything)", s, err)
	}
}

func TestSelectionMatch(t *testing.T) {
	e := &maildir.Entry{Sender: "Alice@Example.org", Recipient: "bob@example.NET"}
	cases := []struct {
		specs []string
		want  bool
	}{
		{[]string{"Rexample.net"}, true},
		{[]string{"Rexample.com"}, false},
		{[]string{"Rexample.com", "Rbob@"}, true},   // same letter: any
		{[]string{"Rbob@", "Scarol"}, false},        // different letters: all
		{[]string{"Rbob@", "Salice"}, true},         // both hold
		{[]string{"!Salice"}, false},                // negated
		{[]string{"!Scarol", "Rexample.net"}, true}, // negated and plain
		{[]string{"Ideadbeef0000"}, false},          // an entry the scan did not see has no ID
		{[]string{"!Ideadbeef0000", "Rbob"}, false}, // nor is it selected as "not that ID"
		{[]string{"Sexample.org", "Sexample.net"}, true},
	}
	for _, tc := range cases {
		s, err := ParseSelection(tc.specs)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(e); got != tc.want {
			t.Errorf("%q matches %v, want %v", tc.specs, got, tc.want)
		}
	}
}
