package batch

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// Telemetry: OpenTelemetry metrics and traces through the API packages
// only; the host picks the SDK and exporters (Config.MeterProvider,
// Config.TracerProvider, Config.Propagator; by default the global ones,
// which do nothing until the host installs an SDK).
//
// Metrics (instrumentation scope ScopeName):
//
//	chatbatch.batches.accepted     counter    batches stored          chatbatch.scheduled
//	chatbatch.recipients           counter    recipients by outcome   chatbatch.outcome = sent|failed|canceled|recalled|push_failed
//	chatbatch.accept.duration      histogram  s, POST handling        http.response.status_code
//	chatbatch.chunk.duration       histogram  s, one chunk attempt    chatbatch.result = done|retry
//	chatbatch.queue.lag            histogram  s, chunk due → started
//	chatbatch.delivery.errors      counter    failed items            chatbatch.operation = deliver|push, chatbatch.error.kind = permanent|transient
//	chatbatch.backlog              gauge      recipients due, not yet processed (Config.Admission)
//	chatbatch.backlog.drain_rate   gauge      recipients/s the workers process (Config.Admission)
//	chatbatch.admission.refused    counter    POSTs refused           chatbatch.admission.bound = app|total
//
// Every metric also carries chatbatch.app_id. Traces: a span per POST
// (chatbatch.send: app, batch ID, recipient count), whose context travels
// in each chunk task's payload; a span per chunk attempt (chatbatch.chunk)
// that is its child and links to it; child spans for every store call
// (chatbatch.store.<method>), the delivery (chatbatch.deliver) and the
// push (chatbatch.push). No attribute holds an API key, a message text or
// a variable value.

// ScopeName is the instrumentation scope of chatbatch's meter and tracer.
const ScopeName = "github.com/chatbatch/chatbatch/batch"

// Attribute keys of chatbatch's spans and metrics.
const (
	attrApp       = attribute.Key("chatbatch.app_id")
	attrBatch     = attribute.Key("chatbatch.batch_id")
	attrChunk     = attribute.Key("chatbatch.chunk")
	attrCount     = attribute.Key("chatbatch.recipients")
	attrChunks    = attribute.Key("chatbatch.chunks")
	attrAttempt   = attribute.Key("chatbatch.attempt")
	attrDryRun    = attribute.Key("chatbatch.dry_run")
	attrScheduled = attribute.Key("chatbatch.scheduled")
	attrOutcome   = attribute.Key("chatbatch.outcome")
	attrResult    = attribute.Key("chatbatch.result")
	attrOp        = attribute.Key("chatbatch.operation")
	attrErrKind   = attribute.Key("chatbatch.error.kind")
	attrErrCode   = attribute.Key("chatbatch.error.code")
	attrStatus    = attribute.Key("http.response.status_code")
)

// telemetry holds the instruments of one Service.
type telemetry struct {
	tracer          trace.Tracer
	propagator      propagation.TextMapPropagator
	batchesAccepted metric.Int64Counter
	recipients      metric.Int64Counter
	acceptDuration  metric.Float64Histogram
	chunkDuration   metric.Float64Histogram
	queueLag        metric.Float64Histogram
	deliveryErrors  metric.Int64Counter
	// admission control (Config.Admission)
	backlog          metric.Int64Gauge
	drainRate        metric.Float64Gauge
	admissionRefused metric.Int64Counter
	reads            metric.Int64Counter
}

// durationBuckets suit both an accept (milliseconds) and a chunk or a
// queue wait (seconds to minutes).
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

func newTelemetry(c *Config) (*telemetry, error) {
	mp, tp, prop := c.MeterProvider, c.TracerProvider, c.Propagator
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	m := mp.Meter(ScopeName)
	t := &telemetry{tracer: tp.Tracer(ScopeName), propagator: prop}
	var err error
	if t.batchesAccepted, err = m.Int64Counter("chatbatch.batches.accepted", metric.WithUnit("{batch}"),
		metric.WithDescription("Batches accepted and stored (dry runs excluded).")); err != nil {
		return nil, err
	}
	if t.recipients, err = m.Int64Counter("chatbatch.recipients", metric.WithUnit("{recipient}"),
		metric.WithDescription("Recipients by outcome: sent, failed, canceled, recalled (sent, then taken back by a recall); push_failed counts sent recipients whose push failed.")); err != nil {
		return nil, err
	}
	if t.acceptDuration, err = m.Float64Histogram("chatbatch.accept.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to answer a POST of a batch."), metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if t.chunkDuration, err = m.Float64Histogram("chatbatch.chunk.duration", metric.WithUnit("s"),
		metric.WithDescription("Time of one processing attempt of a chunk."), metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if t.queueLag, err = m.Float64Histogram("chatbatch.queue.lag", metric.WithUnit("s"),
		metric.WithDescription("Time from a chunk being due (accepted, or its sendAt) to a worker starting it."), metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if t.deliveryErrors, err = m.Int64Counter("chatbatch.delivery.errors", metric.WithUnit("{item}"),
		metric.WithDescription("Messages or notifications a Deliverer or Pusher failed, by operation and kind.")); err != nil {
		return nil, err
	}
	if t.backlog, err = m.Int64Gauge("chatbatch.backlog", metric.WithUnit("{recipient}"),
		metric.WithDescription("Recipients of chunks due and not yet processed, per app, as admission control last read them (Config.Admission).")); err != nil {
		return nil, err
	}
	if t.drainRate, err = m.Float64Gauge("chatbatch.backlog.drain_rate", metric.WithUnit("{recipient}/s"),
		metric.WithDescription("Recipients a second the workers process, as admission control measures it between readings of the backlog.")); err != nil {
		return nil, err
	}
	if t.admissionRefused, err = m.Int64Counter("chatbatch.admission.refused", metric.WithUnit("{request}"),
		metric.WithDescription("POSTs refused because the backlog was at its bound: chatbatch.admission.bound = app (429 BACKLOG_FULL) or total (503 OVERLOADED).")); err != nil {
		return nil, err
	}
	if t.reads, err = m.Int64Counter("chatbatch.reads", metric.WithUnit("{read}"),
		metric.WithDescription("Recipients whose message was read for the first time, as the host reported it (MarkRead, POST …/-/reads).")); err != nil {
		return nil, err
	}
	return t, nil
}

// span starts a span named name, a child of ctx's.
func (t *telemetry) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends sp, marking it failed when err is not nil.
func endSpan(sp trace.Span, err error) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, "")
	}
	sp.End()
}

// traced runs f, one store call, in a span chatbatch.store.<op>.
func traced[T any](ctx context.Context, t *telemetry, op string, f func(context.Context) (T, error)) (T, error) {
	ctx, sp := t.span(ctx, "chatbatch.store."+op)
	v, err := f(ctx)
	endSpan(sp, err)
	return v, err
}

// countOutcomes adds the outcomes of one chunk to chatbatch.recipients.
func (t *telemetry) countOutcomes(ctx context.Context, app string, os []store.Outcome) {
	var sent, failed, canceled, pushFailed int64
	for _, o := range os {
		switch o.Status {
		case store.OutcomeSent:
			sent++
		case store.OutcomeFailed:
			failed++
		case store.OutcomeCanceled:
			canceled++
		}
		if o.Push == store.PushFailed {
			pushFailed++
		}
	}
	t.countRecipients(ctx, app, store.OutcomeSent, sent)
	t.countRecipients(ctx, app, store.OutcomeFailed, failed)
	t.countRecipients(ctx, app, store.OutcomeCanceled, canceled)
	t.countRecipients(ctx, app, "push_failed", pushFailed)
}

func (t *telemetry) countRecipients(ctx context.Context, app string, outcome store.OutcomeStatus, n int64) {
	if n > 0 {
		t.recipients.Add(ctx, n, metric.WithAttributes(attrApp.String(app), attrOutcome.String(string(outcome))))
	}
}

// countDeliveryErrors counts the failed items of one Deliver or Push call
// (delivery.ItemErrors), by kind: one Add per kind, not per item.
func (t *telemetry) countDeliveryErrors(ctx context.Context, app, op string, errs []error) {
	var permanent, transient int64
	for _, e := range errs {
		switch {
		case e == nil:
		case delivery.IsPermanent(e):
			permanent++
		default:
			transient++
		}
	}
	for kind, n := range map[string]int64{"permanent": permanent, "transient": transient} {
		if n > 0 {
			t.deliveryErrors.Add(ctx, n, metric.WithAttributes(attrApp.String(app), attrOp.String(op), attrErrKind.String(kind)))
		}
	}
}

// seconds is d in seconds, for a histogram.
func seconds(d time.Duration) float64 { return d.Seconds() }

// traceHandler adds the trace and span IDs of the record's context to
// every record, so that a log line can be found from its trace and back.
// The Service logs only through the …Context methods for this.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
