package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

// Idempotency keys have Stripe's meaning: the same key with the same body
// returns the first response and sends nothing again; with another body it
// is refused (422); while the first request with the key is still being
// accepted, a second one is told to wait (409). Keys are scoped by app and
// remembered for Config.IdempotencyTTL.

// idempotencyStale is how long an in-progress claim may stay before it is
// taken as abandoned (its request died between claiming and storing). It
// must exceed the longest accept: the bulk look-ups, the store transaction
// and Config.EnqueueTimeout.
const idempotencyStale = 2 * time.Minute

// idempotency is the state of one request that carries a key.
type idempotency struct {
	keys store.Batches
	app  string
	key  string
	hash string
	// claimed is true once this request holds the key and must release it
	// if it fails.
	claimed bool
}

// checkIdempotencyKey validates the header: 1–255 printable ASCII characters.
func checkIdempotencyKey(key string) *apiError {
	if len(key) == 0 || len(key) > 255 {
		return paramError("Idempotency-Key", "must be 1 to 255 characters long, not %d", len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return paramError("Idempotency-Key", "must be printable ASCII; byte %d is 0x%02x", i, key[i])
		}
	}
	return nil
}

// claim takes the key for this request. It returns the response to send
// instead of processing the request, if any: the first response (a
// replay), or an error.
func (s *Service) claim(ctx context.Context, w http.ResponseWriter, p Principal, key string, body []byte) (*idempotency, *apiError, *sendResult) {
	if aerr := checkIdempotencyKey(key); aerr != nil {
		return nil, aerr, nil
	}
	keys := s.cfg.Batches
	sum := sha256.Sum256(body)
	now := s.cfg.Now().UTC()
	rec := &store.IdempotencyRecord{
		AppID: p.AppID, Key: key, RequestHash: hex.EncodeToString(sum[:]),
		CreatedAt: now, ExpiresAt: now.Add(s.cfg.IdempotencyTTL),
	}
	existing, err := keys.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: rec, StaleBefore: now.Add(-idempotencyStale)})
	switch {
	case err == nil:
		return &idempotency{keys: keys, app: p.AppID, key: key, hash: rec.RequestHash, claimed: true}, nil, nil
	case !errors.Is(err, store.ErrConflict) || existing == nil:
		return nil, s.storeError(ctx, "claim idempotency key", err), nil
	case existing.BatchID == "":
		aerr := newError(http.StatusConflict, CodeIdempotencyInProgress,
			"a request with Idempotency-Key %q is still being accepted; retry in a moment", key).with(Detail{Field: "Idempotency-Key", Value: key})
		aerr.retryAfter = 1
		return nil, aerr, nil
	case existing.RequestHash != rec.RequestHash:
		return nil, newError(http.StatusUnprocessableEntity, CodeIdempotencyKeyReused,
			"Idempotency-Key %q was used for a different request body in the last %v; use a new key for a new request", key, s.cfg.IdempotencyTTL).
			with(Detail{Field: "Idempotency-Key", Value: key}), nil
	}
	w.Header().Set("Idempotent-Replayed", "true")
	return nil, nil, &sendResult{BatchID: existing.BatchID, Count: existing.Count}
}

// release frees the key of a request that failed, so it can be retried
// with the same key. The record of an accepted batch is kept by the store.
func (s *Service) release(ctx context.Context, idem *idempotency) {
	if idem == nil || !idem.claimed {
		return
	}
	// Released even when the request was canceled or ran out of time,
	// within a bound of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StoreTimeout)
	defer cancel()
	if err := idem.keys.ReleaseIdempotencyKey(ctx, &store.ReleaseIdempotencyKeyParams{AppID: idem.app, Key: idem.key}); err != nil {
		s.log.WarnContext(ctx, "batch: releasing an idempotency key failed; it frees itself after a while", "app", idem.app, "err", err)
	}
}

// replayAfterConflict is called when CreateBatch under the key reports a
// conflict: another request with the same key and body (one that took
// over after this request's claim went stale) may have stored the batch
// first. It returns that batch's result, or nil if the conflict was
// something else (a batch ID collision).
func (s *Service) replayAfterConflict(ctx context.Context, w http.ResponseWriter, idem *idempotency) *sendResult {
	now := s.cfg.Now().UTC()
	probe := &store.IdempotencyRecord{AppID: idem.app, Key: idem.key, RequestHash: idem.hash, CreatedAt: now, ExpiresAt: now.Add(s.cfg.IdempotencyTTL)}
	existing, err := idem.keys.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: probe, StaleBefore: time.Time{}}) // never takes over an in-progress claim
	if errors.Is(err, store.ErrConflict) && existing != nil && existing.BatchID != "" && existing.RequestHash == idem.hash {
		w.Header().Set("Idempotent-Replayed", "true")
		idem.claimed = false
		return &sendResult{BatchID: existing.BatchID, Count: existing.Count}
	}
	return nil
}
