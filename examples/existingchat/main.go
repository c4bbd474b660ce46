// Command existingchat is a small chat server that existed before
// chatbatch, with chatbatch's Batch Send Messages API embedded: see
// README.md. The chat server is package chat; the embedding is package
// batchwire and the marked block in newApp below.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/examples/existingchat/batchwire"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
)

type config struct {
	Addr          string
	DB            string
	Redis         string
	AdminKey      string
	SessionSecret string
	API, Worker   bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Addr, "addr", cmp.Or(os.Getenv("EXISTINGCHAT_ADDR"), "127.0.0.1:8080"), "listen address")
	flag.StringVar(&cfg.DB, "db", os.Getenv("DATABASE_URL"), "PostgreSQL URL (DATABASE_URL)")
	flag.StringVar(&cfg.Redis, "redis", cmp.Or(os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"), "Redis for chatbatch's queue: redis://host:port/db or host:port (REDIS_URL)")
	flag.BoolVar(&cfg.API, "api", true, "serve HTTP (the chat API, its websockets and the batch API)")
	flag.BoolVar(&cfg.Worker, "worker", true, "run chatbatch's worker (queue consumer and sweeper) in this process")
	flag.Parse()
	cfg.AdminKey, cfg.SessionSecret = os.Getenv("ADMIN_KEY"), os.Getenv("SESSION_SECRET")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("existingchat", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	if cfg.DB == "" || cfg.SessionSecret == "" {
		return errors.New("set DATABASE_URL (or -db) and SESSION_SECRET")
	}
	if !cfg.API && !cfg.Worker {
		return errors.New("nothing to do: -api=false and -worker=false")
	}
	db, err := chat.Open(ctx, cfg.DB, "")
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	redis, err := redisOpt(cfg.Redis)
	if err != nil {
		return err
	}
	a, err := newApp(ctx, db, cfg, redis, log, nil)
	if err != nil {
		return err
	}
	defer a.batch.Close()

	errc := make(chan error, 2)
	if cfg.Worker {
		go func() { errc <- a.batch.Service.Run(ctx) }()
	}
	if cfg.API {
		hs := &http.Server{Addr: cfg.Addr, Handler: a.srv, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			hs.Shutdown(sctx)
		}()
		go func() {
			log.Info("existingchat listening", "addr", cfg.Addr, "worker", cfg.Worker)
			if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	select {
	case err := <-errc: // the server could not listen, or the worker stopped
		return err
	case <-ctx.Done():
		return <-errc
	}
}

func redisOpt(s string) (asynq.RedisConnOpt, error) {
	if strings.Contains(s, "://") {
		return asynq.ParseRedisURI(s)
	}
	return asynq.RedisClientOpt{Addr: s}, nil
}

// app is the chat server with chatbatch embedded.
type app struct {
	srv   *chat.Server
	batch *batchwire.Batch
}

func newApp(ctx context.Context, db *chat.DB, cfg config, redis asynq.RedisConnOpt, log *slog.Logger, configure func(*batch.Config)) (*app, error) {
	// The chat server, as it was before chatbatch.
	sessions := &chat.Sessions{Secret: []byte(cfg.SessionSecret)}
	auth := &chat.Auth{Sessions: sessions, AdminKey: cfg.AdminKey}
	hub := chat.NewHub(db.Members, log)
	srv := chat.NewServer(db, auth, hub, log)

	// ---- chatbatch: the whole embedding ----
	b, err := batchwire.New(ctx, srv, batchwire.Options{Redis: redis, Logger: log, Configure: configure})
	if err != nil {
		return nil, fmt.Errorf("chatbatch: %w", err)
	}
	b.Mount(srv) // POST/GET /api/v1/messages/batch…
	// ---- end of chatbatch ----

	return &app{srv: srv, batch: b}, nil
}
