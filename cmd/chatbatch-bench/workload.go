package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

// The application, sender and key every request uses.
const (
	appID  = "bench"
	sender = "bench-system"
	apiKey = "bench-admin-key"
)

// The request: internal/seed's template example, scaled up — two template
// variables per para, used in the message (~85 characters rendered) and
// in an extra object.
const (
	msgTemplate   = "Hi $name$,您的訂單 $orderId$ 已出貨! Track your parcel in the app, or reply STOP to opt out."
	extraTemplate = `{"kind":"shipping","orderId":"$orderId$","greeting":"Hi $name$","track":{"carrier":"DHL","ref":"$orderId$"}}`
)

// para is one recipient: a receiver (scenarios a and b) or a room
// (scenario c), and the number its template values are made of.
type para struct {
	receiver string
	room     string
	n        int
}

func varName(n int) string    { return "Name " + strconv.Itoa(n) }
func varOrderID(n int) string { return fmt.Sprintf("ORD-%07d", n) }

var (
	msgBefore, msgMiddle, msgAfter = splitTemplate(msgTemplate)
	extraReplacer                  = func(n int) *strings.Replacer {
		return strings.NewReplacer("$name$", varName(n), "$orderId$", varOrderID(n))
	}
)

// splitTemplate cuts msgTemplate around its two tokens, for a renderer
// that allocates once.
func splitTemplate(t string) (string, string, string) {
	a, rest, _ := strings.Cut(t, "$name$")
	b, c, _ := strings.Cut(rest, "$orderId$")
	return a, b, c
}

// renderText is the message text chatbatch stores for p.
func renderText(n int) string {
	return msgBefore + varName(n) + msgMiddle + varOrderID(n) + msgAfter
}

// renderExtra is the extra JSON chatbatch stores for p.
func renderExtra(n int) string { return extraReplacer(n).Replace(extraTemplate) }

// roomOf is the room a para's message goes to.
func (p para) roomOf() string {
	if p.room != "" {
		return p.room
	}
	return store.DirectRoomID(sender, p.receiver)
}

// storedReceiver is the receiver column of p's message: "" for a room.
func (p para) storedReceiver() string {
	if p.room != "" {
		return ""
	}
	return p.receiver
}

// requestBody is the JSON of POST /messages/batch for ps.
func requestBody(ps []para) []byte {
	b := make([]byte, 0, 512+len(ps)*80)
	b = append(b, `{"messageType":"text","message":`...)
	b = strconv.AppendQuote(b, msgTemplate) // ASCII and CJK only: Go and JSON quoting agree
	b = append(b, `,"sender":"`+sender+`","extra":`+extraTemplate+`,"paras":[`...)
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		if p.room != "" {
			b = append(b, `{"room":"`...)
			b = append(b, p.room...)
		} else {
			b = append(b, `{"receiver":"`...)
			b = append(b, p.receiver...)
		}
		b = append(b, `","$name$":"`...)
		b = append(b, varName(p.n)...)
		b = append(b, `","$orderId$":"`...)
		b = append(b, varOrderID(p.n)...)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

// User and room IDs. Pool "a" users have a one-on-one room with the
// sender; "c" rooms have two members; fresh "b" users have no room.
func userA(i int) string             { return fmt.Sprintf("ua%07d", i) }
func roomC(i int) string             { return fmt.Sprintf("rc%07d", i) }
func userB(tag string, i int) string { return fmt.Sprintf("ub%s_%07d", tag, i) }

// plan is a list of requests whose paras are made on demand, so that a
// large backlog is never held in memory at once.
type plan struct {
	requests int
	gen      func(k int) []para
}

// splitPlan spreads total recipients over requests of at most per
// recipients; mk(i) makes the i-th recipient overall.
func splitPlan(total, per int, mk func(i int) para) plan {
	return plan{
		requests: (total + per - 1) / per,
		gen: func(k int) []para {
			lo, hi := k*per, min((k+1)*per, total)
			ps := make([]para, 0, hi-lo)
			for i := lo; i < hi; i++ {
				ps = append(ps, mk(i))
			}
			return ps
		},
	}
}

// messageRow is the row chatbatch stores in <prefix>messages for ps[idx]
// of batch batchID, in messageColumns order.
func messageRow(d *database, batchID string, idx int, p para, at time.Time) []any {
	return []any{appID, batchID + "-" + strconv.Itoa(idx), p.roomOf(), p.storedReceiver(), sender, "text",
		renderText(p.n), renderExtra(p.n), nil, batchID, idx, d.timeArg(at)}
}

const messageColumns = "app_id, id, room_id, receiver, sender, type, text, extra, fields, batch_id, idx, created_at"

var messageColumnList = strings.Split(strings.ReplaceAll(messageColumns, " ", ""), ",")
