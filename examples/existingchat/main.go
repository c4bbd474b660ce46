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
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
	// Queue is chatbatch's asynq queue ("" for chatbatch's default).
	Queue string
	// Bus is the Redis pub/sub channel the hubs of all processes share;
	// "" keeps events in the process (one process only).
	Bus string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Addr, "addr", cmp.Or(os.Getenv("EXISTINGCHAT_ADDR"), "127.0.0.1:8080"), "listen address")
	flag.StringVar(&cfg.DB, "db", os.Getenv("DATABASE_URL"), "PostgreSQL URL (DATABASE_URL)")
	flag.StringVar(&cfg.Redis, "redis", cmp.Or(os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"), "Redis for chatbatch's queue: redis://host:port/db or host:port (REDIS_URL)")
	flag.BoolVar(&cfg.API, "api", true, "serve HTTP (the chat API, its websockets and the batch API)")
	flag.BoolVar(&cfg.Worker, "worker", true, "run chatbatch's worker (queue consumer and sweeper) in this process")
	flag.StringVar(&cfg.Queue, "queue", os.Getenv("CHATBATCH_QUEUE"), "chatbatch's asynq queue, when several deployments share a Redis (CHATBATCH_QUEUE; default chatbatch's)")
	flag.StringVar(&cfg.Bus, "bus", envOr("HUB_BUS", "existingchat:hub"), `the Redis pub/sub channel on which every process's hub publishes and the API processes subscribe; "" or none: events stay in this process, which must then run the API and the worker (HUB_BUS)`)
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

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	if cfg.DB == "" || cfg.SessionSecret == "" {
		return errors.New("set DATABASE_URL (or -db) and SESSION_SECRET")
	}
	if !cfg.API && !cfg.Worker {
		return errors.New("nothing to do: -api=false and -worker=false")
	}
	if cfg.Bus == "none" {
		cfg.Bus = ""
	}
	if cfg.Bus == "" && cfg.API != cfg.Worker {
		return errors.New("-api=false or -worker=false needs -bus: without it a worker's messages reach only its own process's websockets")
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
	defer a.Close()

	errc := make(chan error, 2)
	if cfg.Worker {
		go func() { errc <- a.batch.Service.Run(ctx) }()
	}
	if cfg.API {
		if a.bus != nil {
			// Subscribed before the first websocket is accepted.
			if _, err := a.bus.Subscribe(ctx, a.srv.Hub); err != nil {
				return err
			}
		}
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: a.srv, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			// Websockets are hijacked connections, which Shutdown does not
			// wait for: close them, and their clients reconnect elsewhere.
			a.srv.Hub.DropAll()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			hs.Shutdown(sctx)
		}()
		go func() {
			log.Info("existingchat listening", "addr", ln.Addr().String(), "worker", cfg.Worker, "bus", cfg.Bus)
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
	bus   *chat.RedisBus // nil without cfg.Bus
	rdb   redis.UniversalClient
}

// Close closes the bus's Redis client.
func (a *app) Close() error {
	if a.rdb != nil {
		return a.rdb.Close()
	}
	return nil
}

func newApp(ctx context.Context, db *chat.DB, cfg config, redisConn asynq.RedisConnOpt, log *slog.Logger, configure func(*batch.Config)) (*app, error) {
	// The chat server, as it was before chatbatch.
	sessions := &chat.Sessions{Secret: []byte(cfg.SessionSecret)}
	auth := &chat.Auth{Sessions: sessions, AdminKey: cfg.AdminKey}
	hub := chat.NewHub(db.Members, log)
	srv := chat.NewServer(db, auth, hub, log)
	a := &app{srv: srv}
	if cfg.Bus != "" { // the hubs of all processes, on one Redis channel
		rdb, ok := redisConn.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			return nil, errors.New("the bus needs a go-redis client")
		}
		a.rdb, a.bus = rdb, chat.NewRedisBus(rdb, cfg.Bus)
		hub.UseBus(a.bus)
	}

	// ---- chatbatch: the whole embedding ----
	b, err := batchwire.New(ctx, srv, batchwire.Options{Redis: redisConn, Logger: log, Configure: func(c *batch.Config) {
		c.Queue = cmp.Or(cfg.Queue, c.Queue)
		if configure != nil {
			configure(c)
		}
	}})
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("chatbatch: %w", err)
	}
	b.Mount(srv) // POST/GET /api/v1/messages/batch…
	// ---- end of chatbatch ----

	a.batch = b
	return a, nil
}
