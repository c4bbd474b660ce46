package bunstore

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/store"
)

// rowOfMessage is how messages were written before messageRow: a row of
// values that bun writes one by one.
func rowOfMessage(app string, m *store.Message, fields nullString) row {
	extra := nullString{}
	if m.Extra != nil {
		extra = someString(string(m.Extra))
	}
	return row{app, m.ID, m.RoomID, m.Receiver, m.Sender, m.Type, m.Text, extra, fields, m.BatchID, m.Index, toDB(m.CreatedAt)}
}

func testMessages() []store.Message {
	msgs := make([]store.Message, 500)
	for i := range msgs {
		msgs[i] = store.Message{ID: fmt.Sprint("b3f0c8e0a1d2b3c4-", i), RoomID: store.DirectRoomID("sender-1", fmt.Sprint("u", i)),
			Receiver: fmt.Sprint("u", i), Sender: "sender-1", Type: "text", Text: fmt.Sprintf("Hello Name %d, your order ORD-%07d shipped", i, i),
			Extra: json.RawMessage(`{"orderId":"ORD-1"}`), BatchID: "b3f0c8e0a1d2b3c4", Index: i, CreatedAt: time.Date(2026, 12, 7, 13, 0, 0, 123456789, time.UTC)}
	}
	// What the values may hold: quotes, a backslash, no Extra, empty
	// Extra, Fields, non-ASCII text.
	msgs[1].Text, msgs[2].Extra, msgs[3].Extra, msgs[4].Text = `it's a "test" \ here`, nil, json.RawMessage{}, "名前 ✓"
	return msgs
}

// TestMessageRowAsRow: messageRow writes a message's values into the SQL
// exactly as the row of values did (the PostgreSQL dialect here; on MySQL
// and SQLite, where bunstore inlines messages, the conformance suite
// reads them back).
func TestMessageRowAsRow(t *testing.T) {
	gen := schema.NewQueryGen(pgdialect.New())
	msgs := testMessages()
	for i := range msgs {
		fields := nullString{}
		if i == 5 {
			fields = someString(`{"k":1}`)
		}
		want, _ := rowOfMessage("app", &msgs[i], fields).AppendQuery(gen, nil)
		r, _ := newMessageRow("app", &msgs[i], fields)
		got, _ := r.AppendQuery(gen, nil)
		if string(got) != string(want) {
			t.Errorf("message %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// BenchmarkMessageRows: writing a chunk's 500 messages into SQL.
func BenchmarkMessageRows(b *testing.B) {
	gen := schema.NewQueryGen(pgdialect.New())
	msgs := testMessages()
	buf := make([]byte, 0, 1<<20)
	b.Run("row", func(b *testing.B) {
		for b.Loop() {
			buf = buf[:0]
			for i := range msgs {
				buf, _ = rowOfMessage("app", &msgs[i], nullString{}).AppendQuery(gen, buf)
			}
		}
	})
	b.Run("messageRow", func(b *testing.B) {
		for b.Loop() {
			buf = buf[:0]
			for i := range msgs {
				r, _ := newMessageRow("app", &msgs[i], nullString{})
				buf, _ = r.AppendQuery(gen, buf)
			}
		}
	})
	// The prepared INSERT's bind parameters (SQLite, MySQL).
	b.Run("messageArgs", func(b *testing.B) {
		rows := make([]messageRow, len(msgs))
		for i := range msgs {
			rows[i], _ = newMessageRow("app", &msgs[i], nullString{})
		}
		b.ReportAllocs()
		for b.Loop() {
			_ = messageArgs(dialect.MySQL, rows)
		}
	})
}
