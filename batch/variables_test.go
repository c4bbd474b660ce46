package batch_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// declaredBody declares "$first name$", "$1$", "$z w$" (no identifier
// names) and "$訂單編號$" (one) in some paras and not others. "$1$z w$"
// shows the union over the batch at work: with ChunkSize 1, user-b's
// chunk declares only "$z w$", yet "$1$" (declared by paras of other
// chunks) is the token there and is left as written.
const declaredBody = `{"message":"Hi $first name$, order $訂單編號$ #$1$ (Price $5, $1$z w$)","messageType":"text",
	"extra":{"title":"$first name$/$1$","$1$":"key","n":[1,"$z w$"]},
	"paras":[
		{"receiver":"user-a","$first name$":"Ann","$訂單編號$":"A-1","$1$":"$first name$"},
		{"receiver":"user-b","$first name$":"Bob","$z w$":"ZW"},
		{"room":"room-001","$first name$":"Room","$1$":7,"$z w$":true}]}`

var declaredWant = []struct{ room, text, extra string }{
	{store.DirectRoomID("system", "user-a"), "Hi Ann, order A-1 #$first name$ (Price $5, $first name$z w$)", `{"title":"Ann/$first name$","$1$":"key","n":[1,"$z w$"]}`},
	{store.DirectRoomID("system", "user-b"), "Hi Bob, order $訂單編號$ #$1$ (Price $5, $1$z w$)", `{"title":"Bob/$1$","$1$":"key","n":[1,"ZW"]}`},
	{"room-001", "Hi Room, order $訂單編號$ #7 (Price $5, 7z w$)", `{"title":"Room/7","$1$":"key","n":[1,"true"]}`},
}

// TestDeclaredVariables posts paras whose keys are not identifier names
// and checks the dry run's preview and the stored messages: both render
// every para alike, with the names of the whole batch.
func TestDeclaredVariables(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 1 })

	r := e.Do(t, http.MethodPost, "/messages/batch?dryRun=true&previewLimit=20", bt.AdminKey, bt.JSONContentType, strings.NewReader(declaredBody))
	if r.Status != 200 {
		t.Fatalf("dry run = %d %s", r.Status, r.Raw)
	}
	var res struct {
		Preview []struct {
			Room, Message string
			Extra         json.RawMessage
		}
	}
	bt.Must(t, json.Unmarshal(r.Result, &res))
	if len(res.Preview) != len(declaredWant) {
		t.Fatalf("preview %s", r.Result)
	}
	for i, w := range declaredWant {
		if p := res.Preview[i]; p.Room != w.room || p.Message != w.text || string(p.Extra) != w.extra {
			t.Errorf("preview %d = %q %s, want %q %s", i, p.Message, p.Extra, w.text, w.extra)
		}
	}
	e.AssertNothingHappened(t)

	id := bt.Accepted(t, e.Post(t, bt.AdminKey, declaredBody)).BatchID
	e.ProcessAll(t)
	for i, w := range declaredWant {
		msgs := bt.RoomMessages(t, e.St, bt.TestApp, w.room)
		if len(msgs) != 1 || msgs[0].ID != fmt.Sprintf("%s-%d", id, i) {
			t.Fatalf("room %s: %+v", w.room, msgs)
		}
		if m := msgs[0]; m.Text != w.text || string(m.Extra) != w.extra {
			t.Errorf("message %d = %q %s, want %q %s (as the preview)", i, m.Text, m.Extra, w.text, w.extra)
		}
	}
	if st := e.WaitFinished(t, bt.AdminKey, id); st.Sent != 3 {
		t.Errorf("status %+v", st)
	}
	// The payload carries the declared names the templates use, so that
	// each chunk compiles as the whole batch does.
	b, err := e.St.GetBatch(t.Context(), bt.TestApp, id)
	bt.Must(t, err)
	var pl struct{ Declared []string }
	bt.Must(t, json.Unmarshal(b.Payload, &pl))
	if want := []string{"1", "first name", "z w"}; !slices.Equal(pl.Declared, want) {
		t.Errorf("payload declares %q, want %q", pl.Declared, want)
	}
	// Without such names the payload is as before.
	id = bt.Accepted(t, e.Post(t, bt.AdminKey, validBody)).BatchID
	b, err = e.St.GetBatch(t.Context(), bt.TestApp, id)
	bt.Must(t, err)
	if strings.Contains(string(b.Payload), "declared") {
		t.Errorf("payload %s", b.Payload)
	}
}

func TestDeclaredVariablesStrict(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.StrictVariables = true })
	errCase{body: `{"message":"Hi $first name$ #$1$","messageType":"text","extra":{"k":"$z w$"},"paras":[
		{"receiver":"user-a","$first name$":"A","$1$":1,"$z w$":"z"},
		{"receiver":"user-b","$1$":2},
		{"room":"room-001","$first name$":"R","$1$":3}]}`,
		Status: 400, code: "MISSING_VARIABLE",
		msg: `2 recipients have no value for some template variables (first: paras[1], receiver "user-b", lacks [$first name$ $z w$])`,
		details: []batch.Detail{
			{Index: idx(1), Field: "paras[1]", Variables: []string{"$first name$", "$z w$"}, Receiver: "user-b"},
			{Index: idx(2), Field: "paras[2]", Variables: []string{"$z w$"}, Room: "room-001"},
		}}.run(t, e)
	e.AssertNothingHappened(t)

	// A name no para declares is literal text, as before: nothing lacks it.
	bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"Hi $first name$, Price $5$","messageType":"text","paras":[{"receiver":"user-a","$1$":1}]}`))
	e.ProcessAll(t)
	if msgs := e.Rec.Messages(); len(msgs) != 1 || msgs[0].Text != "Hi $first name$, Price $5$" {
		t.Errorf("messages %+v", msgs)
	}
}

func TestDeclaredVariableKeys(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	body := func(key string) string {
		k, _ := json.Marshal(key)
		return `{"message":"m","messageType":"text","paras":[{"receiver":"user-a",` + string(k) + `:"v"}]}`
	}
	long := strings.Repeat("x ", 128) // 256 bytes, not an identifier name
	for _, c := range []errCase{
		{body: body("$a$b$"), msg: `paras[0]: unknown key "$a$b$"; a template variable's name cannot contain "$"`},
		{body: body("$" + long + "$"), msg: `paras[0]: the template variable name in key "$x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x…$" is 256 bytes long; a name is at most 255 bytes`},
		{body: body("$$"), msg: `paras[0]: unknown key "$$"; a recipient has "receiver", "room" and template variables such as "$name$" (any text without "$" between dollar signs)`},
		{body: body("first name"), msg: `paras[0]: unknown key "first name"; a recipient has "receiver", "room"`},
		{body: `{"message":"m","messageType":"text","$1$":"x","paras":[{"receiver":"user-a"}]}`, msg: `$1$: unknown field "$1$"; template variables go in each element of paras`},
	} {
		c.Status, c.code = 400, "INVALID_BODY"
		c.run(t, e)
	}
	e.AssertNothingHappened(t)
	for _, key := range []string{"$" + long[:255] + "$", "$" + strings.Repeat("a", 300) + "$", "$ $", `$say "hi"\$`, "$\u2028$"} {
		bt.Accepted(t, e.Post(t, bt.AdminKey, body(key)))
	}
}
