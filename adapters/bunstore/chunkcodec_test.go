package bunstore

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/store"
)

func TestRecipientsRoundTrip(t *testing.T) {
	cases := map[string][]store.Recipient{
		"none":  {},
		"empty": {{}},
		"seed": {
			{Receiver: "user-a", Vars: map[string]string{"name": "Alice", "orderId": "ORD-001"}},
			{Receiver: "user-b", Vars: map[string]string{"name": "Bob"}},
			{Room: "room-001"},
			{Receiver: "user-c", Room: "room-002", Vars: map[string]string{}},
		},
		"tricky": {
			{Receiver: "12:34", Room: "~2;", Vars: map[string]string{"-": "-", "n:m": "", "名字": "🚀 \"q\" \\ \n", "": "empty name"}},
			{Receiver: strings.Repeat("x", 300), Vars: map[string]string{"0": "9:abcdefghi"}},
		},
		"declared names": {
			{Receiver: "user-a", Vars: map[string]string{"1": "one", "first name": "Ann", "訂單編號": "A-1", " ": "", "12:3": "x;y", "say \"hi\"": "$1$"}},
			{Room: "room-001", Vars: map[string]string{"first name": "Room", "z w": "2"}},
		},
	}
	for name, rs := range cases {
		t.Run(name, func(t *testing.T) {
			enc := encodeRecipients(rs)
			if !strings.HasPrefix(enc, recipientsV2) {
				t.Fatalf("encoded as %q, want the compact form", enc)
			}
			got, err := decodeRecipients(enc)
			if err != nil {
				t.Fatalf("decode %q: %v", enc, err)
			}
			if len(rs) == 0 && len(got) == 0 {
				return
			}
			if !reflect.DeepEqual(got, rs) {
				t.Errorf("round trip of %q:\n got %#v\nwant %#v", enc, got, rs)
			}
			if again := encodeRecipients(got); again != enc {
				t.Errorf("not deterministic: %q then %q", enc, again)
			}
		})
	}
}

func TestRecipientsExample(t *testing.T) {
	// The form documented on recipientsV2.
	rs := []store.Recipient{
		{Receiver: "user-a", Vars: map[string]string{"name": "Alice", "orderId": "ORD-001"}},
		{Room: "room-001"},
	}
	want := "~2;2;4:name7:orderId;2;m6:user-a0:5:Alice7:ORD-001n0:8:room-001--"
	if got := encodeRecipients(rs); got != want {
		t.Errorf("encodeRecipients = %q, want %q", got, want)
	}
}

func TestRecipientsNotPlainTextFallBackToJSON(t *testing.T) {
	for _, rs := range [][]store.Recipient{
		{{Receiver: "u", Vars: map[string]string{"k": "a\x00b"}}},
		{{Receiver: "u\x00"}},
		{{Room: "r", Vars: map[string]string{"k\x00": "v"}}},
		{{Receiver: "\xff"}},
	} {
		enc := encodeRecipients(rs)
		if !strings.HasPrefix(enc, "[") || strings.IndexByte(enc, 0) >= 0 {
			t.Errorf("%q encoded as %q, want JSON without NUL bytes", rs, enc)
		}
		got, err := decodeRecipients(enc)
		if err != nil {
			t.Fatal(err)
		}
		if strings.IndexByte(rs[0].Receiver, 0xff) < 0 && !reflect.DeepEqual(got, rs) {
			t.Errorf("round trip of %q: got %q", rs, got)
		}
	}
}

func TestRecipientsLegacyJSON(t *testing.T) {
	// What versions before the compact form stored.
	legacy := `[{"receiver":"user-a","vars":{"name":"Alice"}},{"room":"room-001"},{"receiver":"user-b","vars":{}}]`
	got, err := decodeRecipients(legacy)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Recipient{{Receiver: "user-a", Vars: map[string]string{"name": "Alice"}}, {Room: "room-001"}, {Receiver: "user-b", Vars: map[string]string{}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("legacy decode = %#v", got)
	}
}

func TestRecipientsMalformed(t *testing.T) {
	for _, s := range []string{
		"~2;", "~2;x;", "~2;1;", "~2;1;4:name;", "~2;1;4:name;1;", "~2;1;4:name;1;m1:a", "~2;1;4:name;1;m1:a0:",
		"~2;1;4:name;1;n1:a0:1:v", // a value for a recipient without Vars
		"~2;0;;1;x1:a0:", "~2;0;;1;m9:a0:", "~2;0;;1;m1:a0:trailing", "~2;0;;2;m1:a0:",
		"~2;0;;9999999999;", "~2;0;;-1;", "~2;1;99:name;0;",
	} {
		if got, err := decodeRecipients(s); err == nil {
			t.Errorf("decodeRecipients(%q) = %#v, want an error", s, got)
		}
	}
}

func FuzzRecipients(f *testing.F) {
	f.Add("user-a", "", "name", "Alice", true)
	f.Add("", "room-1", "", "", false)
	f.Add("1:2", "~2;", "-", "-", true)
	f.Fuzz(func(t *testing.T, receiver, room, name, value string, withVars bool) {
		rs := []store.Recipient{{Receiver: receiver, Room: room}, {Receiver: room, Room: receiver}}
		if withVars {
			rs[0].Vars = map[string]string{name: value}
			rs[1].Vars = map[string]string{}
		}
		enc := encodeRecipients(rs)
		got, err := decodeRecipients(enc)
		if err != nil {
			t.Fatalf("decode %q: %v", enc, err)
		}
		if plainText(receiver) && plainText(room) && plainText(name) && plainText(value) {
			if !reflect.DeepEqual(got, rs) {
				t.Fatalf("round trip of %q: got %#v, want %#v", enc, got, rs)
			}
		} else {
			// JSON: invalid UTF-8 becomes U+FFFD, as it always did.
			js, _ := json.Marshal(rs)
			var want []store.Recipient
			if err := json.Unmarshal(js, &want); err != nil {
				t.Fatal(err)
			}
			if want[1].Vars == nil && withVars {
				want[1].Vars = map[string]string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("JSON round trip: %#v, want %#v", got, want)
			}
		}
		// Decoding anything never panics.
		_, _ = decodeRecipients(recipientsV2 + fmt.Sprint(len(name)) + ";" + value)
	})
}

func TestOutcomesRoundTrip(t *testing.T) {
	cases := map[string][]store.Outcome{
		"none": {},
		"chunk": {
			{Status: store.OutcomeSent, Room: "c4c8fcc8e02e576e239f81e9f9a90d21", MessageID: "batch-20261130-abc-0"},
			{Status: store.OutcomeSent, Room: "room-001", MessageID: "batch-20261130-abc-1"},
			{Status: store.OutcomeFailed, Error: "room \"room-003\" no longer exists"},
			{Status: store.OutcomeSent, Room: "r", MessageID: "batch-20261130-abc-10"},
			{Status: store.OutcomeCanceled},
			{Status: store.OutcomeSent, Room: "r", MessageID: "other-ID"},
		},
		"tricky": {
			{Status: "weird:status", Room: "1:2", MessageID: "名字-1", Error: "+;~2;"},
			{Status: store.OutcomeSent, MessageID: "名前-2"}, // shares a partial character with the previous ID
			{Status: "", MessageID: ""},
		},
		"push": {
			{Status: store.OutcomeSent, Room: "r", MessageID: "b-0", Push: store.PushSent},
			{Status: store.OutcomeSent, Room: "r", MessageID: "b-1", Push: store.PushPending},
			{Status: store.OutcomeSent, Room: "r", MessageID: "b-2", Push: store.PushFailed, PushError: "push failed: 1:2;~3;"},
			{Status: store.OutcomeFailed, Error: "gone"},
			{Status: store.OutcomeSent, Room: "r", MessageID: "b-4", Push: "odd", PushError: "x"},
			{Status: store.OutcomeSent, Room: "r", MessageID: "b-5", PushError: "no state"},
		},
	}
	for name, os := range cases {
		t.Run(name, func(t *testing.T) {
			enc := encodeOutcomes(os)
			want := outcomesV2
			if name == "push" {
				want = outcomesV3
			}
			if !strings.HasPrefix(enc, want) {
				t.Fatalf("encoded as %q, want the compact form %s", enc, want)
			}
			got, err := decodeOutcomes(enc)
			if err != nil {
				t.Fatalf("decode %q: %v", enc, err)
			}
			if len(os) == 0 && len(got) == 0 {
				return
			}
			if !reflect.DeepEqual(got, os) {
				t.Errorf("round trip of %q:\n got %#v\nwant %#v", enc, got, os)
			}
		})
	}
	// The documented example.
	ex := []store.Outcome{
		{Status: store.OutcomeSent, Room: "c4c8fcc8e02e576e239f81e9f9a90d21", MessageID: "batch-20261130-0"},
		{Status: store.OutcomeFailed, Error: "room was deleted"},
	}
	if got, want := encodeOutcomes(ex), "~2;2;s32:c4c8fcc8e02e576e239f81e9f9a90d210+16:batch-20261130-00:f0:0+0:16:room was deleted"; got != want {
		t.Errorf("encodeOutcomes = %q, want %q", got, want)
	}
	// Earlier versions' JSON, and the fallback for text a column cannot hold.
	legacy := `[{"status":"sent","room":"r","messageID":"m"},{"status":"failed","error":"e"}]`
	got, err := decodeOutcomes(legacy)
	if err != nil || !reflect.DeepEqual(got, []store.Outcome{{Status: store.OutcomeSent, Room: "r", MessageID: "m"}, {Status: store.OutcomeFailed, Error: "e"}}) {
		t.Errorf("legacy outcomes = %#v, %v", got, err)
	}
	nul := []store.Outcome{{Status: store.OutcomeFailed, Error: "a\x00b"}}
	if enc := encodeOutcomes(nul); !strings.HasPrefix(enc, "[") || strings.IndexByte(enc, 0) >= 0 {
		t.Errorf("an error with a NUL byte encoded as %q", enc)
	} else if got, err := decodeOutcomes(enc); err != nil || !reflect.DeepEqual(got, nul) {
		t.Errorf("round trip with NUL = %#v, %v", got, err)
	}
	withPush := []store.Outcome{{Status: store.OutcomeSent, Room: "r", MessageID: "b-0", Push: store.PushFailed, PushError: "token gone"}, {Status: store.OutcomeFailed, Error: "e"}}
	if got, want := encodeOutcomes(withPush), "~3;2;s1:r0+3:b-00:f10:token gonef0:0+0:1:e-"; got != want {
		t.Errorf("encodeOutcomes with push = %q, want %q", got, want)
	}
	for _, bad := range []string{"~2;", "~2;1;", "~2;1;q0:0+0:0:", "~2;1;s0:5+0:0:", "~2;1;s0:0+0:0:x", "~2;2;s0:0+0:0:", "~3;1;s0:0+0:0:", "~3;1;s0:0+0:0:q", "~3;1;s0:0+0:0:f"} {
		if got, err := decodeOutcomes(bad); err == nil {
			t.Errorf("decodeOutcomes(%q) = %#v, want an error", bad, got)
		}
	}
}
