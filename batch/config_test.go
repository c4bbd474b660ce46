package batch_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := batch.New(batch.Config{})
	if err == nil {
		t.Fatal("New with an empty Config succeeded")
	}
	for _, field := range []string{"Config.Store", "Config.Deliverer", "Config.Authenticator", "Config.Redis"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("the error %q does not name %s", err, field)
		}
	}
	st := memstore.New(nil)
	ok := batch.Config{Store: st, Deliverer: delivery.Discard{}, Authenticator: batch.NewStaticKeys(nil), Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}}
	for name, mutate := range map[string]func(*batch.Config){
		"ChunkSize":   func(c *batch.Config) { c.ChunkSize = 20; c.MaxRecipients = 10 },
		"BasePath":    func(c *batch.Config) { c.BasePath = "messages/" },
		"ExtraFields": func(c *batch.Config) { c.ExtraFields = []string{"paras"} },
		// Negative numbers were once taken for the default.
		"ChunkSize is negative":    func(c *batch.Config) { c.ChunkSize = -5 },
		"StoreTimeout is negative": func(c *batch.Config) { c.StoreTimeout = -time.Second },
		"MaxRetry is -2":           func(c *batch.Config) { c.MaxRetry = -2 },
		"Retention is -2ns":        func(c *batch.Config) { c.Retention = -2 },
		// A replayed Idempotency-Key must never name a pruned batch.
		"Retention (1h0m0s) is shorter than Config.IdempotencyTTL": func(c *batch.Config) { c.Retention = time.Hour },
	} {
		c := ok
		mutate(&c)
		if _, err := batch.New(c); err == nil || !strings.Contains(err.Error(), "Config."+name) {
			t.Errorf("%s: New = %v, want an error naming Config.%s", name, err, name)
		}
	}
	svc, err := batch.New(ok)
	if err != nil {
		t.Fatalf("New with the required fields: %v", err)
	}
	bt.Must(t, svc.Close())
	noRetry := ok
	noRetry.MaxRetry = batch.NoRetry
	if svc, err := batch.New(noRetry); err != nil {
		t.Errorf("New with MaxRetry: NoRetry: %v", err)
	} else {
		bt.Must(t, svc.Close())
	}
	// The parts may come separately: the host's own directory and messages.
	split := ok
	split.Store, split.Directory, split.Messages, split.Batches = nil, st, st, st
	if _, err := batch.New(split); err != nil {
		t.Errorf("New with Directory, Messages and Batches: %v", err)
	}
}

// TestDefaultChunkSize: a request is cut into chunks of
// DefaultChunkSize, one task each, unless Config.MaxRecipients is
// smaller: then the default chunk is MaxRecipients (a Config that only
// lowers MaxRecipients stays valid).
func TestDefaultChunkSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ maxRecipients, n, tasks int }{
		{0, 2*batch.DefaultChunkSize + 1, 3},
		{0, batch.DefaultChunkSize, 1},
		{300, 300, 1},
	} {
		e := bt.NewEnv(t, func(cfg *batch.Config) { cfg.MaxRecipients = c.maxRecipients })
		r := e.Do(t, http.MethodPost, "/messages/batch", bt.AdminKey, bt.JSONContentType, strings.NewReader(receivers(c.n, "")))
		if r.Status != 200 {
			t.Fatalf("MaxRecipients %d, %d recipients: POST = %d %s", c.maxRecipients, c.n, r.Status, r.Raw)
		}
		if got := len(e.Enq.All()); got != c.tasks {
			t.Errorf("MaxRecipients %d, %d recipients: %d tasks, want %d", c.maxRecipients, c.n, got, c.tasks)
		}
	}
}
