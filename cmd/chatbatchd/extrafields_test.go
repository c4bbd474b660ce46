package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch"
	"github.com/chatbatch/chatbatch/store"
)

// richBatch is an image message with IMKit's message fields, to user-a and
// room-001, the fields' JSON written as a client would (spaces, nesting,
// non-ASCII) so that a byte-exact copy can be told from a re-encoding.
const richBatch = `{"messageType":"image","message":"$name$, your photo","sender":"system",
 "originalUrl":"https://cdn.example.com/p/1.jpg","thumbnailUrl":"https://cdn.example.com/p/1-thumb.jpg",
 "width":1024,"height":768,"mentions":["user-a", "user-b"],"sticker":"shop-01/貼圖",
 "images":[{"originalUrl":"https://cdn.example.com/p/1.jpg","width":1024}],
 "paras":[{"receiver":"user-a","$name$":"Alice"},{"room":"room-001","$name$":"all"}]}`

// richFields are richBatch's fields as the messages carry them: the JSON
// of the request, compacted.
var richFields = map[string]string{
	"originalUrl":  `"https://cdn.example.com/p/1.jpg"`,
	"thumbnailUrl": `"https://cdn.example.com/p/1-thumb.jpg"`,
	"width":        `1024`,
	"height":       `768`,
	"mentions":     `["user-a","user-b"]`,
	"sticker":      `"shop-01/貼圖"`,
	"images":       `[{"originalUrl":"https://cdn.example.com/p/1.jpg","width":1024}]`,
}

// checkFields compares the fields of a decoded message with richFields.
func checkFields(t *testing.T, where string, got map[string]json.RawMessage) {
	t.Helper()
	for k, want := range richFields {
		var c bytes.Buffer
		if v, ok := got[k]; !ok || json.Compact(&c, v) != nil || c.String() != want {
			t.Errorf("%s: %s = %s, want %s", where, k, got[k], want)
		}
	}
}

// TestExtraFields: by default chatbatchd takes IMKit's message fields
// (-extra-fields) and carries them, verbatim, into every message: the
// stored one (GET /rooms/{id}/messages, IMKit's messages/v3 and the batch's
// messages in IMKit's shape) and the delivered one (the live stream).
// An empty -extra-fields refuses them with 400, as before; a name the API owns is
// a usage error.
func TestExtraFields(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	next := openEvents(t, p.url, "demo-key", "user-a")
	next("ready")
	// Not call: openapi.yaml describes the library's defaults, under which
	// these fields are refused (its SendRequest says a host may allow more).
	_, res, raw := send(t, http.MethodPost, p.url+"/messages/batch", "demo-key", richBatch)
	var sent struct{ Result struct{ BatchID string } }
	if err := json.Unmarshal(raw, &sent); err != nil || res.StatusCode != 200 {
		t.Fatalf("POST /messages/batch with IMKit's message fields = %d %s", res.StatusCode, raw)
	}
	id := waitBatch(t, p.url, "demo-key", sent.Result.BatchID)

	// Delivered: both messages reach user-a's stream with their fields.
	for range 2 {
		m := next("message")
		raw, _ := json.Marshal(m["fields"])
		var fields map[string]json.RawMessage
		must(t, json.Unmarshal(raw, &fields))
		checkFields(t, "the live stream's message "+m["id"].(string), fields)
		if m["messageType"] != "image" {
			t.Errorf("the live stream's message %v", m)
		}
	}

	// Stored: the host's read-back, IMKit's messages/v3 and the batch's
	// messages, in each room.
	direct := store.DirectRoomID("system", "user-a")
	for _, room := range []string{direct, "room-001"} {
		status, env := call(t, http.MethodGet, p.url+"/rooms/"+url.PathEscape(room)+"/messages?limit=1", "demo-key", "")
		var res struct {
			Messages []struct {
				Message string
				Fields  map[string]json.RawMessage
			}
		}
		must(t, json.Unmarshal(env.Result, &res))
		if status != 200 || len(res.Messages) != 1 {
			t.Fatalf("GET /rooms/%s/messages = %d %s", room, status, env.Result)
		}
		checkFields(t, "GET /rooms/"+room+"/messages", res.Messages[0].Fields)

		var page struct{ Data []map[string]json.RawMessage }
		aok(t, http.MethodGet, p.url+"/rooms/"+url.PathEscape(room)+"/messages/v3?limit=1", "demo-key", "", &page)
		if len(page.Data) != 1 {
			t.Fatalf("messages/v3 of %s: %+v", room, page)
		}
		checkFields(t, "messages/v3 of "+room, page.Data[0])
	}
	var msgs struct{ Data []map[string]json.RawMessage }
	aok(t, http.MethodGet, p.url+"/messages/batch?batchID="+id, "demo-key", "", &msgs)
	if len(msgs.Data) != 2 {
		t.Fatalf("GET /messages/batch?batchID=: %+v", msgs)
	}
	for _, m := range msgs.Data {
		checkFields(t, "GET /messages/batch?batchID=", m)
	}

	// Still refused: a field no one allowed, with a hint for a likely slip.
	if status, env := call(t, http.MethodPost, p.url+"/messages/batch", "demo-key", `{"messageType":"text","message":"x","paras":[{"receiver":"user-a"}],"orignalUrl":"https://x"}`); status != 400 || !strings.Contains(env.Error.Message, "orignalUrl") {
		t.Errorf("an unknown field = %d %+v", status, env.Error)
	}

	// -extra-fields '': the fields are refused with 400, as before.
	none := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-extra-fields", "")
	status, env := call(t, http.MethodPost, none.url+"/messages/batch", "demo-key", richBatch)
	if status != 400 || env.Error == nil || !strings.Contains(env.Error.Message, "unknown field") {
		t.Errorf("-extra-fields '': %d %+v", status, env.Error)
	}

	// A field of the API itself, or a template variable, is a usage error.
	for _, bad := range []string{"originalUrl,sender", "$name$", "a,,b", "a,a"} {
		out, err := exec.Command(binary, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-extra-fields", bad).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "xtraFields") && !strings.Contains(string(out), "-extra-fields") {
			t.Errorf("-extra-fields %q: %v\n%s", bad, err, out)
		}
	}
}

// TestExtraFieldsInOpenAPI: every field -extra-fields allows by default is
// a property of the API description's SendRequest, so that a client
// checked against openapi.yaml may send it.
func TestExtraFieldsInOpenAPI(t *testing.T) {
	spec := string(chatbatch.OpenAPI)
	for _, f := range imkitMessageFields {
		if !strings.Contains(spec, "\n        "+f+":\n          $ref: '#/components/schemas/IMKitMessageField'\n") {
			t.Errorf("openapi.yaml's SendRequest has no property %q (an IMKitMessageField)", f)
		}
	}
}
