package proto

import (
	"errors"
	"testing"
)

func TestCheckAddress(t *testing.T) {
	for _, a := range []string{"root@x.test\nX: y", "a\r@b", "a\x00b@c", "\n"} {
		if err := CheckSender(a); !errors.Is(err, ErrAddressBytes) {
			t.Errorf("CheckSender(%q) = %v, want ErrAddressBytes", a, err)
		}
		if err := CheckRecipient(a); !errors.Is(err, ErrAddressBytes) {
			t.Errorf("CheckRecipient(%q) = %v, want ErrAddressBytes", a, err)
		}
	}
	if err := CheckSender(""); err != nil {
		t.Errorf("the null sender is refused: %v", err)
	}
	if err := CheckRecipient(""); !errors.Is(err, ErrEmptyRecipient) {
		t.Errorf("CheckRecipient(\"\") = %v, want ErrEmptyRecipient", err)
	}
	for _, a := range []string{"bob@example.org", "root", `"a b"@c`, "x@[127.0.0.1]"} {
		if err := CheckRecipient(a); err != nil {
			t.Errorf("CheckRecipient(%q) = %v", a, err)
		}
	}
	env := Envelope{Sender: "a@b", Recipients: []string{"c@d", ""}}
	if err := CheckEnvelope(env); !errors.Is(err, ErrEmptyRecipient) {
		t.Errorf("CheckEnvelope = %v", err)
	}
}

func TestParseReplyIsOneLine(t *testing.T) {
	r, err := ParseReply([]byte("Dno\r\nX-Injected: yes\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Text != "no  X-Injected: yes " {
		t.Errorf("text %q", r.Text)
	}
}
