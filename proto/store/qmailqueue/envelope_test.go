package qmailqueue

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	"qbox/proto"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, env := range []proto.Envelope{
		{Sender: "a@b.c", Recipients: []string{"x@y.z", "u@v.w"}},
		{Sender: "", Recipients: []string{"only@one"}},
		{Sender: "s@x", Recipients: nil},
		{Sender: "list-@example.com-@[]", Recipients: []string{strings.Repeat("r", MaxAddress)}},
	} {
		enc := EncodeEnvelope(env)
		got, err := ReadEnvelope(bytes.NewReader(enc), 0)
		if err != nil {
			t.Fatalf("%q: %v", enc, err)
		}
		if got.Sender != env.Sender || strings.Join(got.Recipients, "\n") != strings.Join(env.Recipients, "\n") {
			t.Fatalf("round trip of %+v gave %+v", env, got)
		}
		// Byte-at-a-time reads change nothing.
		if _, err := ReadEnvelope(iotest.OneByteReader(bytes.NewReader(enc)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(EncodeEnvelope(proto.Envelope{Sender: "s", Recipients: []string{"r1", "r2"}})); got != "Fs\x00Tr1\x00Tr2\x00\x00" {
		t.Fatalf("EncodeEnvelope = %q", got)
	}
}

func TestEnvelopeMalformed(t *testing.T) {
	long := strings.Repeat("a", MaxAddress+1)
	cases := []struct {
		in   string
		code int
	}{
		{"", ExitBadEnvelope},
		{"\x00", ExitBadEnvelope},
		{"Ts@x\x00\x00", ExitBadEnvelope},
		{"Fs@x", ExitBadEnvelope},
		{"Fs@x\x00", ExitBadEnvelope},
		{"Fs@x\x00Tr@y\x00", ExitBadEnvelope},
		{"Fs@x\x00Xr@y\x00\x00", ExitBadEnvelope},
		{"Fs@x\x00Tr@y", ExitBadEnvelope},
		{"F" + long + "\x00\x00", ExitAddressTooLong},
		{"Fs\x00T" + long + "\x00\x00", ExitAddressTooLong},
		// Addresses holding CR or LF, and the empty recipient, are
		// refused, never passed on to split a header line or be
		// rewritten (NUL ends an item, so it cannot be inside one).
		{"F\x00Troot\nx\x00\x00", ExitBadEnvelope},
		{"F\x00Troot@x\r\x00\x00", ExitBadEnvelope},
		{"Fme@x\nX-Injected: y\x00Troot@x\x00\x00", ExitBadEnvelope},
		{"Fs@x\x00T\x00\x00", ExitBadEnvelope},
		{"Fs@x\x00Ta@x\x00T\x00\x00", ExitBadEnvelope},
	}
	for _, tc := range cases {
		_, err := ReadEnvelope(strings.NewReader(tc.in), 0)
		var ee *EnvelopeError
		if !errors.As(err, &ee) {
			t.Errorf("ReadEnvelope(%.40q) = %v, want *EnvelopeError", tc.in, err)
			continue
		}
		if ee.ExitCode() != tc.code {
			t.Errorf("ReadEnvelope(%.40q): exit %d, want %d (%v)", tc.in, ee.ExitCode(), tc.code, err)
		}
	}
	// The recipient limit.
	env := EncodeEnvelope(proto.Envelope{Sender: "s", Recipients: []string{"a", "b", "c"}})
	if _, err := ReadEnvelope(bytes.NewReader(env), 2); err == nil {
		t.Fatal("3 recipients accepted with a limit of 2")
	}
	// A read error is passed through, not disguised as a format error.
	boom := errors.New("boom")
	if _, err := ReadEnvelope(iotest.ErrReader(boom), 0); !errors.Is(err, boom) {
		t.Fatalf("read error: got %v", err)
	}
}

func TestEnvelopeStopsAtTerminator(t *testing.T) {
	r := strings.NewReader("Fs\x00Tr\x00\x00trailing")
	if _, err := ReadEnvelope(r, 0); err != nil {
		t.Fatal(err)
	}
	if r.Len() != len("trailing") {
		t.Fatalf("%d bytes left, want %d", r.Len(), len("trailing"))
	}
}

func TestExitReply(t *testing.T) {
	cases := []struct {
		code   int
		status proto.Status
		text   string
	}{
		{0, proto.OK, ""},
		{11, proto.Permanent, "envelope address too long for qq (#5.1.3)"},
		{31, proto.Permanent, "mail server permanently rejected message (#5.3.0)"},
		{35, proto.Permanent, "qq permanent problem (#5.3.0)"},
		{51, proto.Temporary, "qq out of memory (#4.3.0)"},
		{54, proto.Temporary, "qq read error (#4.3.0)"},
		{55, proto.Temporary, "qq unable to read configuration (#4.3.0)"},
		{56, proto.Temporary, "qq trouble making network connection (#4.3.0)"},
		{61, proto.Temporary, "qq trouble in home directory (#4.3.0)"},
		{71, proto.Temporary, "mail server temporarily rejected message (#4.3.0)"},
		{72, proto.Temporary, "connection to mail server timed out (#4.4.1)"},
		{73, proto.Temporary, "connection to mail server rejected (#4.4.1)"},
		{74, proto.Temporary, "communication with mail server failed (#4.4.2)"},
		{81, proto.Temporary, "qq internal bug (#4.3.0)"},
		{82, proto.Temporary, "qq temporary problem (#4.3.0)"},
		{91, proto.Temporary, "qq internal bug (#4.3.0)"},
		{100, proto.Temporary, "qq temporary problem (#4.3.0)"},
		{111, proto.Temporary, "qq temporary problem (#4.3.0)"},
	}
	for _, tc := range cases {
		r := ExitReply(tc.code)
		if r.Status != tc.status || (tc.text != "" && r.Text != tc.text) {
			t.Errorf("ExitReply(%d) = %s, want %c%s", tc.code, r, tc.status, tc.text)
		}
	}
}

func TestCustomReply(t *testing.T) {
	if r, ok := CustomReply([]byte("Dno such user (#5.1.1)\x00")); !ok || r.String() != "Dno such user (#5.1.1)" {
		t.Fatalf("got %v %v", r, ok)
	}
	for _, bad := range []string{"", "K fine", "D", "Xjunk"} {
		if _, ok := CustomReply([]byte(bad)); ok {
			t.Errorf("CustomReply(%q) accepted", bad)
		}
	}
}

func FuzzReadEnvelope(f *testing.F) {
	f.Add([]byte("Fs@x\x00Tr@y\x00\x00"))
	f.Add([]byte("F\x00\x00"))
	f.Add([]byte("Fs\x00Tr\x00"))
	f.Add([]byte("T\x00"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Small limits (16-byte addresses, 5 recipients) and inputs of
		// at most 256 bytes reach every path: the fuzzer's minimization
		// of an interesting input is quadratic in its length, and a
		// 1,003-byte address kept every worker stalled for the whole
		// -fuzzminimizetime.
		const maxAddress = 16
		if len(b) > 256 {
			return
		}
		env, err := readEnvelope(bytes.NewReader(b), 5, maxAddress)
		if err != nil {
			var ee *EnvelopeError
			if !errors.As(err, &ee) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(env.Sender) > maxAddress || len(env.Recipients) > 5 {
			t.Fatalf("limits exceeded: %d-byte sender, %d recipients", len(env.Sender), len(env.Recipients))
		}
		if err := proto.CheckEnvelope(env); err != nil {
			t.Fatalf("accepted %+v: %v", env, err)
		}
		// What was accepted re-encodes to a prefix of the input.
		if enc := EncodeEnvelope(env); !bytes.HasPrefix(b, enc) {
			t.Fatalf("re-encoding %q is not a prefix of the input %q", enc, b)
		}
	})
}
