// Package batchwire embeds chatbatch into the chat server: the seam
// between the two. It implements chatbatch's store.Directory and
// store.Messages over the chat server's tables (Store), its
// delivery.Deliverer over the chat server's websocket hub (Deliverer),
// authenticates chatbatch's requests with the chat server's sessions and
// admin key (Authenticate), keeps the batch bookkeeping in bunstore's
// tables in the same database, and mounts the API under the chat
// server's /api/v1.
package batchwire

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
)

// BasePath is where the batch API lives on the chat server.
const BasePath = "/api/v1/messages/batch"

// Options configure New.
type Options struct {
	// App is the chatbatch application ID of this chat server (default "existingchat").
	App string
	// Redis is asynq's Redis.
	Redis asynq.RedisConnOpt
	// TablePrefix of bunstore's bookkeeping tables (default "chatbatch_").
	TablePrefix string
	// UserMaxRecipients caps the batches a signed-in user sends (default 100).
	UserMaxRecipients int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Configure, when set, adjusts the batch.Config before batch.New
	// (queue, leases, concurrency…).
	Configure func(*batch.Config)
}

// Batch is chatbatch wired into one chat server.
type Batch struct {
	Service *batch.Service
	Store   *Store
	Batches *bunstore.Store
	bunDB   *bun.DB
}

// New wires chatbatch into srv: it migrates bunstore's bookkeeping tables
// (only those) into srv's database and builds the batch.Service. Mount
// it with Mount, run its worker with Service.Run.
func New(ctx context.Context, srv *chat.Server, opts Options) (*Batch, error) {
	app := cmp.Or(opts.App, "existingchat")
	// bunstore shares the chat server's pgx pool (and its search_path).
	bdb := bun.NewDB(stdlib.OpenDBFromPool(srv.DB.Pool), pgdialect.New())
	batches, err := bunstore.New(bdb, &bunstore.Options{TablePrefix: opts.TablePrefix, BookkeepingOnly: true})
	if err != nil {
		bdb.Close()
		return nil, err
	}
	if err := batches.Migrate(ctx); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("batchwire: migrate the batch tables: %w", err)
	}
	st := NewStore(srv.DB, app)
	cfg := batch.Config{
		Directory:           st,
		Messages:            st,
		Batches:             batches,
		Deliverer:           Deliverer{Hub: srv.Hub, Store: st},
		AuthenticateRequest: Authenticate(srv.Auth, app, cmp.Or(opts.UserMaxRecipients, 100)),
		Redis:               opts.Redis,
		BasePath:            BasePath,
		Logger:              opts.Logger,
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	svc, err := batch.New(cfg)
	if err != nil {
		bdb.Close()
		return nil, err
	}
	b := &Batch{Service: svc, Store: st, Batches: batches, bunDB: bdb}
	srv.OnRead(b.readHook(app, cmp.Or(opts.Logger, slog.Default())))
	return b, nil
}

// readHook is the chat server's read hook: of the messages a member's
// read marker newly passed, those chatbatch sent (their external_id is
// chatbatch's message ID, "<batchID>-<index>") are reads of its
// recipients, reported with one MarkRead; chatbatch decides which count
// (the receiver's, a room member's other than the sender). The receipt
// is the chat server's and stands whatever chatbatch answers; a failed
// report is retried once, then logged (the marker has moved, so the
// same receipt does not come again).
func (b *Batch) readHook(app string, log *slog.Logger) func(context.Context, chat.ReadReceipt) {
	return func(ctx context.Context, rr chat.ReadReceipt) {
		var ids []string
		for _, m := range rr.Messages {
			if m.ExternalID != "" {
				ids = append(ids, m.ExternalID)
			}
		}
		if len(ids) == 0 {
			return
		}
		_, err := b.Service.MarkRead(ctx, app, rr.Reader.Handle, ids...)
		if err != nil && ctx.Err() == nil {
			_, err = b.Service.MarkRead(ctx, app, rr.Reader.Handle, ids...)
		}
		if err != nil {
			log.WarnContext(ctx, "batchwire: reads not reported to chatbatch", "reader", rr.Reader.Handle, "messages", len(ids), "err", err)
		}
	}
}

// Mount puts the batch API on the chat server's /api/v1 router. The
// handler answers everything below BasePath itself, in chatbatch's
// envelope; the chat server's other endpoints keep their own format.
func (b *Batch) Mount(srv *chat.Server) {
	srv.API.Mount("/messages/batch", b.Service.Handler())
}

// Close closes the service (not the chat server's pool).
func (b *Batch) Close() error {
	return errors.Join(b.Service.Close(), b.bunDB.Close())
}

// Authenticate is batch.Config.AuthenticateRequest on the chat server's
// credentials: the admin key is an admin principal (may name a sender),
// a session is a user principal that sends as the account's handle.
// Without either the request is refused (401): chatbatch's IM-API-KEY
// is not used here.
func Authenticate(auth *chat.Auth, app string, userMax int) func(*http.Request) (batch.Principal, error) {
	return func(r *http.Request) (batch.Principal, error) {
		id, err := auth.Identify(r)
		switch {
		case errors.Is(err, chat.ErrNoCredentials):
			return batch.Principal{}, batch.ErrNoCredentials
		case err != nil:
			return batch.Principal{}, fmt.Errorf("%w: %w", batch.ErrUnauthenticated, err)
		case id.Admin:
			return batch.Principal{AppID: app, Admin: true}, nil
		default:
			return batch.Principal{AppID: app, UserID: id.Account.Handle, MaxRecipients: userMax}, nil
		}
	}
}
