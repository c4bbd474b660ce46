package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
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

// benchUnmarshal is the baseline: json.Unmarshal of body (n paras) into
// unmarshalTarget.
func benchUnmarshal(b *testing.B, body []byte, n int) {
	b.ReportAllocs()
	for b.Loop() {
		var v unmarshalTarget
		if err := json.Unmarshal(body, &v); err != nil || len(v.Paras) != n {
			b.Fatal(err, len(v.Paras))
		}
	}
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
		benchUnmarshal(b, body, n)
		mbps(b)
	})
	b.Run("decode+validate", func(b *testing.B) {
		s := testService(b)
		b.ReportAllocs()
		for b.Loop() {
			req, aerr := decodeSend(body, s.cfg.MaxRecipients, s.extraFields)
			if aerr == nil {
				aerr = s.validate(context.Background(), req)
			}
			if aerr != nil || len(req.Paras) != n {
				b.Fatal(aerr)
			}
		}
		mbps(b)
	})
}

// droppedBatches is memstore with a CreateBatch that keeps nothing, so
// that a benchmark can accept batch after batch without memory growing.
type droppedBatches struct{ *memstore.Store }

func (droppedBatches) CreateBatch(context.Context, *store.Batch, []store.Chunk) error { return nil }

// BenchmarkAccept is BenchmarkDecode for the whole accept path: a POST of
// the 10,000-recipient body through the handler (authentication, reading
// the body, decoding, validation, the recipient look-ups on an in-memory
// directory, cutting chunks, encoding the payload, enqueueing with a
// no-op enqueuer), beside json.Unmarshal of the same bytes. What a
// database adds is measured by the store's own benchmarks.
func BenchmarkAccept(b *testing.B) {
	const n = 10_000
	body := benchBody(n)
	b.Run("unmarshal", func(b *testing.B) { benchUnmarshal(b, body, n) })
	b.Run("accept", func(b *testing.B) {
		dir := memstore.New(nil)
		users := []string{"system"}
		for i := range n {
			users = append(users, fmt.Sprintf("user-%06d", i))
		}
		if err := dir.AddUsers(b.Context(), "app", users...); err != nil {
			b.Fatal(err)
		}
		s, err := New(Config{
			Directory: dir, Messages: dir, Batches: droppedBatches{dir}, Deliverer: delivery.Discard{},
			Authenticator: NewStaticKeys(map[string]Principal{"key": {AppID: "app", Admin: true}}),
			Enqueuer:      nopEnqueuer{}, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		h := s.Handler()
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPost, "/messages/batch", bytes.NewReader(body))
			r.Header.Set("IM-API-KEY", "key")
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("POST = %d %s", w.Code, w.Body)
			}
		}
	})
}
