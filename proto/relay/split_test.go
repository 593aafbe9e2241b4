package relay

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"qbox/proto"
)

func TestSplit(t *testing.T) {
	rcpts := []string{"a@x.test", "b@x.test", "c@x.test"}
	k, z, d := proto.K("ok"), proto.Z("later"), proto.D("no")
	for _, tc := range []struct {
		name        string
		replies     []proto.Reply
		taken, left []string
		refused     bool
		temporary   bool   // Err is a Z
		errHas      string // "" with a nil Err
	}{
		{"all K", []proto.Reply{k, k, k}, rcpts, nil, false, false, ""},
		{"all D", []proto.Reply{d, d, d}, nil, rcpts, true, false, "no"},
		{"all Z", []proto.Reply{z, z, z}, nil, rcpts, false, true, "later"},
		{"D and Z", []proto.Reply{d, z, d}, nil, rcpts, false, true, "later"},
		{"K and D", []proto.Reply{k, d, k}, []string{"a@x.test", "c@x.test"}, []string{"b@x.test"}, false, false, "taken for 2 of 3"},
		{"K and Z", []proto.Reply{z, k, k}, []string{"b@x.test", "c@x.test"}, []string{"a@x.test"}, false, true, "taken for 2 of 3"},
		{"too few replies", []proto.Reply{k, k}, nil, rcpts, false, true, "2 replies for 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Outcome{Replies: tc.replies}.Split(rcpts)
			if !slices.Equal(s.Taken, tc.taken) || !slices.Equal(s.Left, tc.left) || s.Refused != tc.refused {
				t.Fatalf("got taken %v left %v refused %v; want %v %v %v", s.Taken, s.Left, s.Refused, tc.taken, tc.left, tc.refused)
			}
			if tc.errHas == "" {
				if s.Err != nil {
					t.Fatalf("err %v; want nil", s.Err)
				}
				return
			}
			var pe *proto.Error
			if s.Err == nil || !strings.Contains(s.Err.Error(), tc.errHas) || !errors.As(s.Err, &pe) || pe.Temporary() != tc.temporary {
				t.Fatalf("err %v; want one holding %q, temporary %v", s.Err, tc.errHas, tc.temporary)
			}
		})
	}
}
