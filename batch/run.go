package batch

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// Run processes chunks with an asynq server on Config.Redis and sweeps
// every Config.SweepInterval, until ctx is canceled. Then it stops taking
// tasks at once (even while a sweep waits on the store), waits for
// running chunks up to ServerConfig.ShutdownTimeout (asynq returns
// unfinished ones to the queue) and for a sweep in progress up to
// Config.StoreTimeout, and returns nil. Hosts that run their own asynq
// server use Processor and Sweep instead.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Redis == nil {
		return fmt.Errorf("batch: Run needs Config.Redis")
	}
	sc := s.cfg.ServerConfig
	sc.Concurrency = s.cfg.Concurrency
	if sc.TaskCheckInterval <= 0 {
		sc.TaskCheckInterval = s.cfg.TaskCheckInterval
	}
	sc.Queues = map[string]int{s.cfg.Queue: 1}
	if sc.RetryDelayFunc == nil {
		sc.RetryDelayFunc = RetryDelay
	}
	sc.Logger = asynqLogger{s.log}
	if sc.LogLevel == 0 {
		sc.LogLevel = asynq.WarnLevel
	}
	srv := asynq.NewServer(s.cfg.Redis, sc)
	mux := asynq.NewServeMux()
	mux.Handle(TaskPrefix, s.Processor())
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("batch: start asynq server: %w", err)
	}
	s.log.InfoContext(ctx, "batch worker started", "queue", s.cfg.Queue, "concurrency", sc.Concurrency)

	sweeper := make(chan struct{})
	go func() {
		defer close(sweeper)
		tick := time.NewTicker(s.cfg.SweepInterval)
		defer tick.Stop()
		for {
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "batch: sweep failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	<-ctx.Done()
	// Stop taking chunks first, whatever the sweep is doing: a sweep that
	// waits on an unreachable database must not keep the worker taking
	// chunks after it was told to stop (a rolling restart's SIGTERM).
	srv.Shutdown()
	select {
	case <-sweeper:
	case <-time.After(s.cfg.StoreTimeout):
		// Its store call ends on its own (StoreTimeout bounds each);
		// the caller need not wait for it.
		s.log.WarnContext(ctx, "batch: Run returns while a sweep still waits on the store")
	}
	s.log.InfoContext(ctx, "batch worker stopped")
	return nil
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error("asynq: " + fmt.Sprint(args...)) }

// Fatal logs at error level. asynq's own code never calls it; exiting the
// host's process is not a library's call to make.
func (a asynqLogger) Fatal(args ...any) { a.l.Error("asynq: fatal: " + fmt.Sprint(args...)) }
