package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/delivery"
)

// benchNames are the names the generated bodies cycle through.
var benchNames = []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"}

// benchBody returns a request like seed.Template scaled up to n paras:
// receivers "user-000123", the variables $name$ and $orderId$
// ("ORD-000123") in every para, and an extra object using them.
func benchBody(n int) []byte {
	var b strings.Builder
	b.WriteString(`{
  "messageType": "text",
  "message": "Hi $name$,您的訂單 $orderId$ 已出貨!",
  "push": true,
  "sender": "system",
  "extra": {"orderUrl": "https://shop.example.com/orders/$orderId$", "title": "Order $orderId$ for $name$", "kind": "shipping"},
  "paras": [`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    {\"receiver\": \"user-%06d\", \"$name$\": \"%s\", \"$orderId$\": \"ORD-%06d\"}", i, benchNames[i%len(benchNames)], i)
	}
	b.WriteString("\n  ]\n}\n")
	return []byte(b.String())
}

// nopEnqueuer accepts every task; the tests in this package never enqueue.
type nopEnqueuer struct{}

func (nopEnqueuer) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return &asynq.TaskInfo{}, nil
}

// testService returns a Service with the default limits on memstore.
func testService(tb testing.TB, extraFields ...string) *Service {
	tb.Helper()
	s, err := New(Config{
		Store: memstore.New(nil), Deliverer: delivery.Discard{}, Authenticator: NewStaticKeys(nil),
		Enqueuer: nopEnqueuer{}, Logger: slog.New(slog.DiscardHandler), ExtraFields: extraFields,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// unmarshalTarget is the baseline's typed struct: the fields of the
// request, with extra kept raw and each para a plain map[string]string
// (receiver, room and "$name$" keys alike), which is what a handler
// without strict decoding would most naturally unmarshal into.
type unmarshalTarget struct {
	Message     string              `json:"message"`
	MessageType string              `json:"messageType"`
	Sender      string              `json:"sender"`
	Push        bool                `json:"push"`
	Extra       json.RawMessage     `json:"extra"`
	Paras       []map[string]string `json:"paras"`
}

// BenchmarkDecode compares decoding and validating a 10,000-recipient body
// (decodeSend + Service.validate, as handleSend runs them) with a bare
// json.Unmarshal of the same bytes into unmarshalTarget, in one run so
// that the ratio is meaningful on a noisy machine.
func BenchmarkDecode(b *testing.B) {
	const n = 10_000
	body := benchBody(n)
	mbps := func(b *testing.B) {
		b.ReportMetric(float64(len(body))*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
	}
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v unmarshalTarget
			if err := json.Unmarshal(body, &v); err != nil || len(v.Paras) != n {
				b.Fatal(err, len(v.Paras))
			}
		}
		mbps(b)
	})
	b.Run("decode+validate", func(b *testing.B) {
		s := testService(b)
		b.ReportAllocs()
		for b.Loop() {
			req, aerr := decodeSend(body, s.cfg.MaxRecipients, s.extraFields)
			if aerr == nil {
				aerr = s.validate(req)
			}
			if aerr != nil || len(req.Paras) != n {
				b.Fatal(aerr)
			}
		}
		mbps(b)
	})
}
