package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// syncBuffer is a bytes.Buffer for a logger used by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// otelEnv is an Env whose Service records into in-memory OpenTelemetry
// SDKs and logs JSON into a buffer.
type otelEnv struct {
	*bt.Env
	spans   *tracetest.SpanRecorder
	metrics *sdkmetric.ManualReader
	logs    *syncBuffer
}

func newOtelEnv(t *testing.T) *otelEnv {
	o := &otelEnv{spans: tracetest.NewSpanRecorder(), metrics: sdkmetric.NewManualReader(), logs: &syncBuffer{}}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(o.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.metrics))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	o.Env = bt.NewEnv(t, func(c *batch.Config) {
		c.TracerProvider, c.MeterProvider, c.Propagator = tp, mp, propagation.TraceContext{}
		c.Logger = slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return o
}

func (o *otelEnv) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range o.spans.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %s, want 1", len(found), name)
	}
	return found[0]
}

func attrOf(kvs []attribute.KeyValue, key string) (attribute.Value, bool) {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// sums returns, per metric name and attribute set, the value of every
// counter and the count of every histogram.
func (o *otelEnv) sums(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	bt.Must(t, o.metrics.Collect(t.Context(), &rm))
	out := map[string]int64{}
	key := func(name string, set attribute.Set) string {
		var parts []string
		for _, kv := range set.ToSlice() {
			if kv.Key != "chatbatch.app_id" {
				parts = append(parts, string(kv.Key)+"="+kv.Value.String())
			}
		}
		return name + "{" + strings.Join(parts, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != batch.ScopeName {
			t.Errorf("metrics of scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] += int64(p.Count)
				}
			default:
				t.Errorf("metric %s has data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

// TestTelemetry follows one batch through spans, metrics and logs: the
// POST's span, its context carried in the task payload, the chunk's span
// as its child with store, deliver and push spans below, the metrics of
// every stage, trace IDs in the logs, and no API key or message content in
// any attribute.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	o := newOtelEnv(t)
	res := bt.Accepted(t, o.Post(t, bt.AdminKey, seed.Template))
	send := o.span(t, "chatbatch.send")
	if v, _ := attrOf(send.Attributes(), "chatbatch.batch_id"); v.AsString() != res.BatchID {
		t.Errorf("send span's batch ID %q, want %q", v.AsString(), res.BatchID)
	}
	if v, _ := attrOf(send.Attributes(), "chatbatch.recipients"); v.AsInt64() != 2 {
		t.Errorf("send span's recipients = %d, want 2", v.AsInt64())
	}
	if got := o.span(t, "chatbatch.store.CreateBatch").Parent().SpanID(); got != send.SpanContext().SpanID() {
		t.Errorf("CreateBatch's span is not a child of the send span")
	}

	task := o.Enq.All()[0].Task
	var payload struct {
		Trace map[string]string `json:"trace"`
	}
	bt.Must(t, json.Unmarshal(task.Payload(), &payload))
	if tp := payload.Trace["traceparent"]; !strings.Contains(tp, send.SpanContext().TraceID().String()) {
		t.Fatalf("the task payload carries traceparent %q, want the send span's trace %s", tp, send.SpanContext().TraceID())
	}
	// The worker runs with a fresh context: all it knows of the request
	// comes through the payload.
	bt.Must(t, o.Svc.Processor().ProcessTask(context.Background(), task))

	chunk := o.span(t, "chatbatch.chunk")
	if chunk.Parent().SpanID() != send.SpanContext().SpanID() || chunk.SpanContext().TraceID() != send.SpanContext().TraceID() {
		t.Errorf("the chunk span's parent is %v, want the send span %v", chunk.Parent(), send.SpanContext())
	}
	if links := chunk.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != send.SpanContext().SpanID() {
		t.Errorf("the chunk span links to %v, want the send span", links)
	}
	for _, name := range []string{"chatbatch.store.StartChunk", "chatbatch.store.DirectRooms", "chatbatch.store.SaveMessages",
		"chatbatch.deliver", "chatbatch.push", "chatbatch.store.CompleteChunk"} {
		if s := o.span(t, name); s.Parent().SpanID() != chunk.SpanContext().SpanID() {
			t.Errorf("span %s is not a child of the chunk's span", name)
		}
	}

	// Nothing secret or personal in any attribute or event.
	secrets := []string{bt.AdminKey, "Alice", "Bob", "ORD-001", "已出貨", "Hi "}
	check := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			for _, s := range secrets {
				if strings.Contains(kv.Value.String(), s) {
					t.Errorf("%s: attribute %s = %q holds %q", where, kv.Key, kv.Value.String(), s)
				}
			}
		}
	}
	for _, s := range o.spans.Ended() {
		check("span "+s.Name(), s.Attributes())
		for _, e := range s.Events() {
			check("span "+s.Name()+" event "+e.Name, e.Attributes)
		}
	}

	want := map[string]int64{
		"chatbatch.batches.accepted{chatbatch.scheduled=false}":    1,
		"chatbatch.recipients{chatbatch.outcome=sent}":             2,
		"chatbatch.accept.duration{http.response.status_code=200}": 1,
		"chatbatch.chunk.duration{chatbatch.result=done}":          1,
		"chatbatch.queue.lag{}":                                    1,
	}
	got := o.sums(t)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}

	// The worker's log lines carry the chunk's trace.
	found := false
	sc := bufio.NewScanner(strings.NewReader(o.logs.String()))
	for sc.Scan() {
		var rec map[string]any
		bt.Must(t, json.Unmarshal(sc.Bytes(), &rec))
		if rec["msg"] == "batch finished" {
			found = true
			if rec["trace_id"] != chunk.SpanContext().TraceID().String() || rec["span_id"] != chunk.SpanContext().SpanID().String() {
				t.Errorf("the batch finished log has trace %v span %v, want the chunk's %s %s", rec["trace_id"], rec["span_id"],
					chunk.SpanContext().TraceID(), chunk.SpanContext().SpanID())
			}
		}
	}
	if !found {
		t.Errorf("no batch finished log line in %s", o.logs.String())
	}
}

// TestTelemetryErrors: failed deliveries and pushes are counted by kind,
// refused requests by status, and a canceled batch's recipients as
// canceled once.
func TestTelemetryErrors(t *testing.T) {
	t.Parallel()
	o := newOtelEnv(t)
	o.Rec.DeliverHook = func(_ context.Context, msgs []store.Message) error {
		for i, m := range msgs {
			if m.Receiver == "user-b" {
				return &delivery.PartialError{Failed: map[int]error{i: delivery.Permanent(errors.New("blocked"))}}
			}
		}
		return nil
	}
	pushes := 0
	o.Rec.PushHook = func(context.Context, []delivery.Notification) error {
		if pushes++; pushes == 1 {
			return errors.New("push provider unavailable")
		}
		return nil
	}
	res := bt.Accepted(t, o.Post(t, bt.AdminKey, seed.Template))
	task := o.Enq.All()[0].Task
	if err := o.Svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt succeeded although the push failed")
	}
	bt.Must(t, o.Svc.Processor().ProcessTask(t.Context(), task))
	if _, st := o.Status(t, bt.AdminKey, res.BatchID); st.Sent != 1 || st.Failed != 1 {
		t.Errorf("status %+v", st)
	}
	if r := o.Post(t, bt.AdminKey, `{"message":"x","messageType":"text","paras":[{"receiver":"nobody"}]}`); r.Status != 404 {
		t.Errorf("unknown receiver: %d", r.Status)
	}
	sched := bt.Accepted(t, o.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"later","messageType":"text","sendAt":%d,"paras":[{"receiver":"user-a"},{"receiver":"user-b"}]}`,
		time.Now().Add(24*time.Hour).UnixMilli())))
	o.Cancel(t, bt.AdminKey, sched.BatchID)
	o.Cancel(t, bt.AdminKey, sched.BatchID) // 409: counts nothing more

	want := map[string]int64{
		"chatbatch.delivery.errors{chatbatch.error.kind=permanent,chatbatch.operation=deliver}": 1,
		"chatbatch.delivery.errors{chatbatch.error.kind=transient,chatbatch.operation=push}":    1,
		"chatbatch.chunk.duration{chatbatch.result=retry}":                                      1,
		"chatbatch.chunk.duration{chatbatch.result=done}":                                       1,
		"chatbatch.recipients{chatbatch.outcome=sent}":                                          1,
		"chatbatch.recipients{chatbatch.outcome=failed}":                                        1,
		"chatbatch.recipients{chatbatch.outcome=canceled}":                                      2,
		"chatbatch.accept.duration{http.response.status_code=404}":                              1,
		"chatbatch.batches.accepted{chatbatch.scheduled=true}":                                  1,
	}
	got := o.sums(t)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// TestTelemetryReads: the first reads MarkRead records are counted once
// (chatbatch.reads); repeats and reads that do not count are not.
func TestTelemetryReads(t *testing.T) {
	t.Parallel()
	o := newOtelEnv(t)
	res := bt.Accepted(t, o.Post(t, bt.AdminKey, seed.Template))
	bt.Must(t, o.Svc.Processor().ProcessTask(t.Context(), o.Enq.All()[0].Task))
	for range 2 {
		if _, err := o.Svc.MarkRead(t.Context(), bt.TestApp, "user-a", res.BatchID+"-0", res.BatchID+"-1", "not-ours"); err != nil {
			t.Fatal(err)
		}
	}
	if got := o.sums(t)["chatbatch.reads{}"]; got != 1 {
		t.Errorf("chatbatch.reads = %d, want 1 (user-a's own message, once)", got)
	}
}
