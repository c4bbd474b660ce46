package bunstore

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
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
		_, _ = decodeRecipients(packedPrefix + value)
		_, _ = decodeOutcomes(packedPrefix + value)
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
			// Near hex room IDs, written as strings.
			{Status: store.OutcomeSent, Room: "C4C8FCC8E02E576E239F81E9F9A90D21", MessageID: "m-1"},
			{Status: store.OutcomeSent, Room: "c4c8fcc8e02e576e239f81e9f9a90d2", MessageID: "m-2"},
			{Status: store.OutcomeSent, Room: "c4c8fcc8e02e576e239f81e9f9a90d2g", MessageID: "m-3"},
			{Status: store.OutcomeSent, Room: "#xMj8yOAuV24jn4Hp+akNIQ", MessageID: "m-4"},
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
	if got, want := encodeOutcomes(ex), "~2;2;s#xMj8yOAuV24jn4Hp+akNIQ0+16:batch-20261130-00:f0:0+0:16:room was deleted"; got != want {
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
	for _, bad := range []string{"~2;", "~2;1;", "~2;1;q0:0+0:0:", "~2;1;s0:5+0:0:", "~2;1;s0:0+0:0:x", "~2;2;s0:0+0:0:", "~3;1;s0:0+0:0:", "~3;1;s0:0+0:0:q", "~3;1;s0:0+0:0:f",
		"~2;1;s#xMj8yOAuV24jn4Hp", "~2;1;s#xMj8yOAuV24jn4Hp+akN!Q0+0:0:", "~2;1;s#0+0:0:"} {
		if got, err := decodeOutcomes(bad); err == nil {
			t.Errorf("decodeOutcomes(%q) = %#v, want an error", bad, got)
		}
	}
}

// benchChunk is a chunk of 500 recipients of a two-variable template, as
// chatbatch-bench sends them, and its outcomes.
func benchChunk() ([]store.Recipient, []store.Outcome) {
	var rs []store.Recipient
	var os []store.Outcome
	for i := range 500 {
		n := 31234 + i
		receiver := fmt.Sprintf("ua%07d", n)
		rs = append(rs, store.Recipient{Receiver: receiver, Vars: map[string]string{"name": fmt.Sprint("Name ", n), "orderId": fmt.Sprintf("ORD-%07d", n)}})
		os = append(os, store.Outcome{Status: store.OutcomeSent, Room: store.DirectRoomID("sender-1", receiver), MessageID: fmt.Sprint("b3f0c8e0a1d2b3c4-", i)})
	}
	os[7] = store.Outcome{Status: store.OutcomeFailed, Error: "room was deleted"}
	return rs, os
}

func TestLargeChunksArePacked(t *testing.T) {
	rs, os := benchChunk()
	encR, encO := encodeRecipients(rs), encodeOutcomes(os)
	for name, c := range map[string]struct {
		enc     string
		compact []byte
		maxSize int // bytes a recipient, packed
	}{
		"recipients": {encR, compactRecipients(rs), 12},
	} {
		if !strings.HasPrefix(c.enc, packedPrefix) {
			t.Fatalf("%s of 500 encoded as %.40q…, want it packed", name, c.enc)
		}
		if per := len(c.enc) / 500; per > c.maxSize {
			t.Errorf("%s packed: %d bytes a recipient (compact: %d), want at most %d", name, per, len(c.compact)/500, c.maxSize)
		}
		if !plainText(c.enc) || strings.ContainsAny(c.enc, "'\"\\\n") {
			t.Errorf("%s packed is not plain text without quotes: %.60q", name, c.enc)
		}
		got, err := unpackText(c.enc)
		if err != nil || got != string(c.compact) {
			t.Errorf("%s: unpack = %.40q, %v; want the compact form", name, got, err)
		}
	}
	gotR, err := decodeRecipients(encR)
	if err != nil || !reflect.DeepEqual(gotR, rs) {
		t.Errorf("recipients round trip: %v", err)
	}
	// Outcomes in one-on-one rooms are written with their room IDs as
	// bytes, unpacked, at about the bytes packing got.
	compactO, hexRooms := compactOutcomes(os)
	if hexRooms != len(os)-1 || encO != string(compactO) {
		t.Errorf("outcomes of 500 in one-on-one rooms: %d hex rooms, encoded as %.40q…; want %d, unpacked", hexRooms, encO, len(os)-1)
	}
	if per := len(encO) / 500; per > 33 {
		t.Errorf("outcomes: %d bytes a recipient, want at most 33", per)
	}
	if !plainText(encO) || strings.ContainsAny(encO, "'\"\\\n") {
		t.Errorf("outcomes are not plain text without quotes: %.60q", encO)
	}
	gotO, err := decodeOutcomes(encO)
	if err != nil || !reflect.DeepEqual(gotO, os) {
		t.Errorf("outcomes round trip: %v", err)
	}
	// Outcomes in rooms named by the request (room paras) are packed.
	named := slices.Clone(os)
	for i := range named {
		if named[i].Room != "" {
			named[i].Room = fmt.Sprintf("room-%05d", 7*i%40)
		}
	}
	encN := encodeOutcomes(named)
	if !strings.HasPrefix(encN, packedPrefix) || len(encN)/500 > 12 {
		t.Errorf("outcomes in named rooms: %d bytes a recipient, %.20q…; want packed, at most 12", len(encN)/500, encN)
	}
	if got, err := decodeOutcomes(encN); err != nil || !reflect.DeepEqual(got, named) {
		t.Errorf("named-room outcomes round trip: %v", err)
	}
	// Packed outcomes with hex rooms (a mix) are read too.
	if got, err := decodeOutcomes(packText(compactO)); err != nil || !reflect.DeepEqual(got, os) {
		t.Errorf("packed hex-room outcomes: %v", err)
	}
	if encodeRecipients(gotR) != encR {
		t.Error("packed recipients are not deterministic")
	}
	// The compact form of earlier versions is still read.
	if got, err := decodeRecipients(string(compactRecipients(rs))); err != nil || !reflect.DeepEqual(got, rs) {
		t.Errorf("unpacked recipients: %v", err)
	}

}

func TestPackOnlyWhatShrinks(t *testing.T) {
	small := []store.Recipient{{Receiver: "user-a", Vars: map[string]string{"name": "Alice"}}}
	if enc := encodeRecipients(small); strings.HasPrefix(enc, packedPrefix) {
		t.Errorf("one recipient packed: %q", enc)
	}
	// Text that does not compress (random bytes, as a room ID might be)
	// stays as it is.
	var rs []store.Recipient
	for i := range 40 {
		rs = append(rs, store.Recipient{Room: fmt.Sprintf("%x", sha256.Sum256([]byte{byte(i)}))})
	}
	enc := encodeRecipients(rs)
	if len(enc) < packAbove {
		t.Fatalf("test chunk of %d bytes is under packAbove", len(enc))
	}
	// Hex compresses to about half; base64 gives back a third: still
	// smaller, so it is packed — the point is that the result is never
	// larger than the compact form.
	if c := compactRecipients(rs); len(enc) > len(c) {
		t.Errorf("packed %d bytes from %d", len(enc), len(c))
	}
	raw := make([]byte, 4096)
	for i := range raw {
		raw[i] = byte(i*7919%251) ^ byte(i>>3)
	}
	b64 := base64.StdEncoding.EncodeToString(raw) // high entropy, plain text
	if got := packText([]byte(b64)); got != b64 {
		t.Errorf("incompressible text packed to %d bytes from %d", len(got), len(b64))
	}
}

func TestUnpackMalformed(t *testing.T) {
	_, os := benchChunk()
	compact, _ := compactOutcomes(os)
	good := packText(compact)
	if !strings.HasPrefix(good, packedPrefix) {
		t.Fatalf("test chunk not packed: %.40q", good)
	}
	twice := packedPrefix + base64.RawStdEncoding.EncodeToString(deflate(t, []byte(good)))
	for name, s := range map[string]string{
		"not base64":   packedPrefix + "@@@@",
		"not deflate":  packedPrefix + base64.RawStdEncoding.EncodeToString([]byte("plain words, not deflate")),
		"truncated":    good[:len(good)/2],
		"packed twice": twice,
	} {
		if got, err := decodeOutcomes(s); !errors.Is(err, errMalformedPacked) {
			t.Errorf("%s: decodeOutcomes = %d outcomes, %v; want errMalformedPacked", name, len(got), err)
		}
		if got, err := decodeRecipients(s); !errors.Is(err, errMalformedPacked) {
			t.Errorf("%s: decodeRecipients = %d recipients, %v; want errMalformedPacked", name, len(got), err)
		}
	}
}

func deflate(t *testing.T, b []byte) []byte {
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

func BenchmarkChunkCodec(b *testing.B) {
	rs, os := benchChunk()
	encR, encO := encodeRecipients(rs), encodeOutcomes(os)
	b.Run("encode-recipients", func(b *testing.B) {
		for b.Loop() {
			encodeRecipients(rs)
		}
	})
	b.Run("decode-recipients", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeRecipients(encR); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode-outcomes", func(b *testing.B) {
		for b.Loop() {
			encodeOutcomes(os)
		}
	})
	b.Run("decode-outcomes", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeOutcomes(encO); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestOutcomesHugeCountNoHugeAllocation: a damaged column whose count
// says a billion outcomes fails to decode without allocating for them.
func TestOutcomesHugeCountNoHugeAllocation(t *testing.T) {
	bad := outcomesV2 + "999999999;s#xMj8yOAuV24jn4Hp+akNIQ0+1:m0:"
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := decodeOutcomes(bad); err == nil {
			t.Fatal("decoded a column of 1 outcome that says 999,999,999")
		}
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	_, _ = decodeOutcomes(bad)
	runtime.ReadMemStats(&ms)
	if grew := ms.TotalAlloc - before; grew > 1<<20 {
		t.Errorf("decoding allocated %d bytes (%v allocations a run), want under 1 MiB", grew, allocs)
	}
}
