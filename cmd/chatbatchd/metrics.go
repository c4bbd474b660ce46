package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metrics is what GET /metrics serves, in Prometheus's text format:
// chatbatch's OpenTelemetry metrics (batch.Config.MeterProvider, exported
// through OpenTelemetry's Prometheus exporter: chatbatch_batches_accepted_total,
// chatbatch_recipients_total, chatbatch_accept_duration_seconds, …),
// asynq's queue metrics (asynq's x/metrics collector, read from Redis at
// each scrape: asynq_queue_size, asynq_tasks_processed_total, …) and the
// Go runtime's and the process's.
type metrics struct {
	registry  *prometheus.Registry
	provider  *sdkmetric.MeterProvider
	inspector *asynq.Inspector
}

func newMetrics(redis asynq.RedisConnOpt) (*metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics: the Prometheus exporter: %w", err)
	}
	m := &metrics{registry: reg, provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))}
	collectorsList := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	if redis != nil {
		m.inspector = asynq.NewInspector(redis)
		collectorsList = append(collectorsList, asynqmetrics.NewQueueMetricsCollector(m.inspector))
	}
	for _, c := range collectorsList {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(fmt.Errorf("metrics: %w", err), m.close(context.Background()))
		}
	}
	return m, nil
}

// handler serves the registry. Errors of one collector (Redis down) leave
// the others' metrics in the answer.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (m *metrics) close(ctx context.Context) error {
	var errs []error
	errs = append(errs, m.provider.Shutdown(ctx))
	if m.inspector != nil {
		errs = append(errs, m.inspector.Close())
	}
	return errors.Join(errs...)
}
