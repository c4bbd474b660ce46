// Package memstore is an in-memory [store.Store]: the reference
// implementation of the store contracts, the default for tests and demos.
//
// Everything lives in one process and is gone when it exits; use
// adapters/bunstore for anything that must survive a restart or be shared
// by several processes.
package memstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

var (
	_ store.Store              = (*Store)(nil)
	_ store.DirectRoomNamer    = (*Store)(nil)
	_ store.DirectRoomResolver = (*Store)(nil)
	_ store.MessageReader      = (*Store)(nil)
	_ store.MessageDeleter     = (*Store)(nil)
)

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// DirectRoomID names the one-on-one room of two users. It must be
	// symmetric in its arguments. Defaults to [store.DirectRoomID].
	DirectRoomID func(a, b string) string
}

// Store is an in-memory store.Store. It is safe for concurrent use. The
// zero value is not usable; call New.
type Store struct {
	directRoomID func(a, b string) string

	mu   sync.RWMutex
	apps map[string]*app
	seq  int64 // insertion order of messages, for stable listing
}

type app struct {
	users    map[string]bool
	rooms    map[string]*room
	messages map[string]*storedMessage
	batches  map[string]*batchRecord
	keys     map[string]*store.IdempotencyRecord
}

type room struct {
	members []string
}

type storedMessage struct {
	msg store.Message
	seq int64
}

type batchRecord struct {
	batch  store.Batch
	chunks []store.Chunk
	// claimedUntil is the end of the claim on reporting the batch's end
	// (store.Batches.ClaimDoneNotifications).
	claimedUntil time.Time
	// reads are the first reads by para index (store.Batches.RecordReads).
	reads map[int]time.Time
}

// New returns an empty Store. opts may be nil.
func New(opts *Options) *Store {
	s := &Store{directRoomID: store.DirectRoomID, apps: map[string]*app{}}
	if opts != nil && opts.DirectRoomID != nil {
		s.directRoomID = opts.DirectRoomID
	}
	return s
}

// appLocked returns the app's data, creating it. s.mu must be held for writing.
func (s *Store) appLocked(id string) *app {
	a := s.apps[id]
	if a == nil {
		a = &app{
			users:    map[string]bool{},
			rooms:    map[string]*room{},
			messages: map[string]*storedMessage{},
			batches:  map[string]*batchRecord{},
			keys:     map[string]*store.IdempotencyRecord{},
		}
		s.apps[id] = a
	}
	return a
}

// readApp returns the app's data or nil. s.mu must be held.
func (s *Store) readApp(id string) *app { return s.apps[id] }

// AddUsers makes ids users of appID. Existing users are left alone.
func (s *Store) AddUsers(ctx context.Context, appID string, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(appID)
	for _, id := range ids {
		a.users[id] = true
	}
	return nil
}

// DeleteUser removes a user (their rooms stay).
func (s *Store) DeleteUser(ctx context.Context, appID, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.appLocked(appID).users, id)
	return nil
}

// AddRoom creates or replaces room id in appID with the given members.
// Members need not be users yet.
func (s *Store) AddRoom(ctx context.Context, appID, id string, members ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appLocked(appID).rooms[id] = &room{members: slices.Clone(members)}
	return nil
}

// DeleteRoom removes a room and leaves its messages.
func (s *Store) DeleteRoom(ctx context.Context, appID, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.appLocked(appID).rooms, id)
	return nil
}

// UserRooms returns the IDs of the rooms userID is a member of, sorted.
func (s *Store) UserRooms(ctx context.Context, appID, userID string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []string{}
	if a := s.readApp(appID); a != nil {
		for id, r := range a.rooms {
			if slices.Contains(r.members, userID) {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// RoomMessages returns up to limit messages of a room, newest first
// (limit <= 0 means all).
func (s *Store) RoomMessages(ctx context.Context, appID, roomID string, limit int) ([]store.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var found []*storedMessage
	if a := s.readApp(appID); a != nil {
		for _, m := range a.messages {
			if m.msg.RoomID == roomID {
				found = append(found, m)
			}
		}
	}
	slices.SortFunc(found, func(x, y *storedMessage) int {
		if c := y.msg.CreatedAt.Compare(x.msg.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(y.seq, x.seq)
	})
	if limit > 0 && len(found) > limit {
		found = found[:limit]
	}
	out := make([]store.Message, len(found))
	for i, m := range found {
		out[i] = copyMessage(m.msg)
	}
	return out, nil
}

// GetMessages implements store.MessageReader.
func (s *Store) GetMessages(ctx context.Context, appID string, ids []string) ([]store.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []store.Message{}
	if a := s.readApp(appID); a != nil {
		seen := map[string]bool{}
		for _, id := range ids {
			if m := a.messages[id]; m != nil && !seen[id] {
				seen[id] = true
				out = append(out, copyMessage(m.msg))
			}
		}
	}
	return out, nil
}

// MissingUsers implements store.Directory.
func (s *Store) MissingUsers(ctx context.Context, appID string, ids []string) ([]string, error) {
	return s.missing(ctx, appID, ids, func(a *app, id string) bool { return a.users[id] })
}

// MissingRooms implements store.Directory.
func (s *Store) MissingRooms(ctx context.Context, appID string, ids []string) ([]string, error) {
	return s.missing(ctx, appID, ids, func(a *app, id string) bool { return a.rooms[id] != nil })
}

func (s *Store) missing(ctx context.Context, appID string, ids []string, exists func(*app, string) bool) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := s.readApp(appID)
	out := []string{}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if a == nil || !exists(a, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// DirectRoom implements store.Directory.
func (s *Store) DirectRoom(ctx context.Context, appID, a, b string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.directRoomLocked(s.appLocked(appID), a, b)
}

// directRoomLocked is DirectRoom with s.mu held for writing.
func (s *Store) directRoomLocked(ap *app, a, b string) (string, error) {
	for _, u := range []string{a, b} {
		if !ap.users[u] {
			return "", fmt.Errorf("memstore: direct room of %q and %q: user %q: %w", a, b, u, store.ErrNotFound)
		}
	}
	id := s.directRoomID(a, b)
	r := ap.rooms[id]
	if r == nil {
		members := []string{a}
		if b != a {
			members = append(members, b)
		}
		ap.rooms[id] = &room{members: members}
		return id, nil
	}
	if !slices.Contains(r.members, a) || !slices.Contains(r.members, b) {
		// Another pair's room under the same ID (the default scheme lower-
		// cases user IDs): sending into it would leak messages.
		return "", fmt.Errorf("memstore: direct room of %q and %q: room %q exists for other members: %w", a, b, id, store.ErrConflict)
	}
	return id, nil
}

// DirectRooms implements store.DirectRoomResolver: DirectRoom for each
// pair, under one lock.
func (s *Store) DirectRooms(ctx context.Context, appID, a string, bs []string) ([]store.DirectRoomResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ap := s.appLocked(appID)
	out := make([]store.DirectRoomResult, len(bs))
	for i, b := range bs {
		out[i].Room, out[i].Err = s.directRoomLocked(ap, a, b)
	}
	return out, nil
}

// RoomMembers implements store.Directory.
func (s *Store) RoomMembers(ctx context.Context, appID string, roomIDs []string) (map[string][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string][]string{}
	a := s.readApp(appID)
	if a == nil {
		return out, nil
	}
	for _, id := range roomIDs {
		if r := a.rooms[id]; r != nil {
			out[id] = slices.Clone(r.members)
		}
	}
	return out, nil
}

// SaveMessages implements store.Messages.
func (s *Store) SaveMessages(ctx context.Context, appID string, msgs []store.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(appID)
	for _, m := range msgs {
		if a.messages[m.ID] != nil {
			continue
		}
		s.seq++
		m = copyMessage(m)
		m.AppID = appID
		m.CreatedAt = m.CreatedAt.UTC()
		a.messages[m.ID] = &storedMessage{msg: m, seq: s.seq}
	}
	return nil
}

// CreateBatch implements store.Batches.
func (s *Store) CreateBatch(ctx context.Context, b *store.Batch, chunks []store.Chunk) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.Chunks != len(chunks) {
		return fmt.Errorf("memstore: create batch %q: Chunks is %d but %d chunks given", b.ID, b.Chunks, len(chunks))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(b.AppID)
	if a.batches[b.ID] != nil {
		return fmt.Errorf("memstore: create batch %q: %w", b.ID, store.ErrConflict)
	}
	var key *store.IdempotencyRecord
	if b.IdempotencyKey != "" {
		if key = a.keys[b.IdempotencyKey]; key == nil || key.BatchID != "" {
			return fmt.Errorf("memstore: create batch %q: idempotency key is not claimed or already used: %w", b.ID, store.ErrConflict)
		}
		key.BatchID, key.Count = b.ID, b.Count
	}
	rec := &batchRecord{batch: *b, chunks: make([]store.Chunk, len(chunks))}
	rec.batch.Payload = slices.Clone(b.Payload)
	rec.batch.CreatedAt, rec.batch.SendAt = utc(b.CreatedAt), utc(b.SendAt)
	for i, c := range chunks {
		c = copyChunk(c)
		c.AppID, c.BatchID, c.No = b.AppID, b.ID, i
		c.Done, c.Outcomes = false, nil
		c.NotBefore = utc(c.NotBefore)
		rec.chunks[i] = c
	}
	a.batches[b.ID] = rec
	return nil
}

// GetBatch implements store.Batches.
func (s *Store) GetBatch(ctx context.Context, appID, id string) (*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, err := s.batchLocked(appID, id)
	if err != nil {
		return nil, err
	}
	return copyBatch(&rec.batch), nil
}

func (s *Store) batchLocked(appID, id string) (*batchRecord, error) {
	if a := s.readApp(appID); a != nil {
		if rec := a.batches[id]; rec != nil {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("memstore: batch %q: %w", id, store.ErrNotFound)
}

func (s *Store) chunkLocked(ref store.ChunkRef) (*batchRecord, *store.Chunk, error) {
	rec, err := s.batchLocked(ref.AppID, ref.BatchID)
	if err != nil {
		return nil, nil, err
	}
	if ref.No < 0 || ref.No >= len(rec.chunks) {
		return nil, nil, fmt.Errorf("memstore: batch %q chunk %d: %w", ref.BatchID, ref.No, store.ErrNotFound)
	}
	return rec, &rec.chunks[ref.No], nil
}

// LoadChunk implements store.Batches.
func (s *Store) LoadChunk(ctx context.Context, ref store.ChunkRef) (*store.Chunk, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, c, err := s.chunkLocked(ref)
	if err != nil {
		return nil, err
	}
	out := copyChunk(*c)
	return &out, nil
}

// StartChunk implements store.Batches.
func (s *Store) StartChunk(ctx context.Context, p *store.StartChunkParams) (*store.Batch, *store.Chunk, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, c, err := s.chunkLocked(p.Ref)
	if err != nil {
		return nil, nil, err
	}
	if !c.Done && (rec.batch.PausedAt.IsZero() || !c.StartedAt.IsZero()) {
		if c.StartedAt.IsZero() {
			c.StartedAt = utc(p.At)
		}
		c.Attempts++
		c.LeaseUntil = utc(p.LeaseUntil)
	}
	out := copyChunk(*c)
	return copyBatch(&rec.batch), &out, nil
}

// RenewChunkLease implements store.Batches.
func (s *Store) RenewChunkLease(ctx context.Context, p *store.RenewChunkLeaseParams) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, c, err := s.chunkLocked(p.Ref)
	if err != nil {
		return err
	}
	if !c.Done {
		c.LeaseUntil = utc(p.Until)
	}
	return nil
}

// CancelBatch implements store.Batches.
func (s *Store) CancelBatch(ctx context.Context, p *store.CancelBatchParams) (*store.Batch, error) {
	appID, id, at := p.AppID, p.BatchID, p.At
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.batchLocked(appID, id)
	if err != nil {
		return nil, err
	}
	b := &rec.batch
	if b.ChunksDone == b.Chunks {
		return nil, fmt.Errorf("memstore: cancel batch %q: already finished: %w", id, store.ErrConflict)
	}
	if b.CanceledAt.IsZero() {
		b.CanceledAt = utc(at)
	}
	cancelUnstarted(rec, at)
	return copyBatch(b), nil
}

// cancelUnstarted completes the chunks of rec that are neither done nor
// started with canceled outcomes.
func cancelUnstarted(rec *batchRecord, at time.Time) {
	b := &rec.batch
	for i := range rec.chunks {
		c := &rec.chunks[i]
		if c.Done || !c.StartedAt.IsZero() {
			continue
		}
		c.Done = true
		c.Outcomes = make([]store.Outcome, len(c.Recipients))
		for j := range c.Outcomes {
			c.Outcomes[j].Status = store.OutcomeCanceled
		}
		b.Canceled += len(c.Recipients)
		b.ChunksDone++
		if b.ChunksDone == b.Chunks {
			b.FinishedAt = utc(at)
		}
	}
}

// PauseBatch implements store.Batches.
func (s *Store) PauseBatch(ctx context.Context, p *store.PauseBatchParams) (*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.batchLocked(p.AppID, p.BatchID)
	if err != nil {
		return nil, err
	}
	b := &rec.batch
	if err := stoppedErr("pause", b); err != nil {
		return nil, err
	}
	if b.PausedAt.IsZero() {
		b.PausedAt = utc(p.At)
	}
	return copyBatch(b), nil
}

// ResumeBatch implements store.Batches.
func (s *Store) ResumeBatch(ctx context.Context, p *store.ResumeBatchParams) (*store.Batch, []store.Chunk, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.batchLocked(p.AppID, p.BatchID)
	if err != nil {
		return nil, nil, err
	}
	b := &rec.batch
	if err := stoppedErr("resume", b); err != nil {
		return nil, nil, err
	}
	if b.PausedAt.IsZero() {
		return copyBatch(b), nil, nil
	}
	shift := time.Duration(0)
	if b.RatePerMinute > 0 {
		shift = max(utc(p.At).Sub(b.PausedAt), 0)
	}
	b.PausedAt = time.Time{}
	var out []store.Chunk
	for i := range rec.chunks {
		c := &rec.chunks[i]
		if c.Done || !c.StartedAt.IsZero() {
			continue
		}
		c.NotBefore = c.NotBefore.Add(shift)
		cc := *c
		cc.Recipients, cc.Outcomes = nil, nil
		out = append(out, cc)
	}
	return copyBatch(b), out, nil
}

// stoppedErr is the ErrConflict of pausing or resuming a batch that is
// finished, canceled or recalled.
func stoppedErr(op string, b *store.Batch) error {
	switch {
	case b.ChunksDone == b.Chunks:
		return fmt.Errorf("memstore: %s batch %q: already finished: %w", op, b.ID, store.ErrConflict)
	case !b.CanceledAt.IsZero() || !b.RecalledAt.IsZero():
		return fmt.Errorf("memstore: %s batch %q: canceled or recalled: %w", op, b.ID, store.ErrConflict)
	}
	return nil
}

// RecordReads implements store.Batches.
func (s *Store) RecordReads(ctx context.Context, p *store.RecordReadsParams) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range p.Reads {
		rec, _, err := s.chunkLocked(store.ChunkRef{AppID: p.AppID, BatchID: r.BatchID, No: r.Chunk})
		if err != nil {
			continue // a pruned batch: skipped
		}
		if _, ok := rec.reads[r.Index]; ok {
			continue
		}
		if rec.reads == nil {
			rec.reads = map[int]time.Time{}
		}
		rec.reads[r.Index] = utc(r.At)
		n++
	}
	return n, nil
}

// ReadCounts implements store.Batches.
func (s *Store) ReadCounts(ctx context.Context, p *store.ReadCountsParams) (map[string]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int{}
	for _, id := range p.BatchIDs {
		if rec, err := s.batchLocked(p.AppID, id); err == nil && len(rec.reads) > 0 {
			out[id] = len(rec.reads)
		}
	}
	return out, nil
}

// ListReads implements store.Batches.
func (s *Store) ListReads(ctx context.Context, p *store.ListReadsParams) ([]store.Read, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []store.Read{}
	rec, err := s.batchLocked(p.AppID, p.BatchID)
	if err != nil {
		return out, nil
	}
	for idx, at := range rec.reads {
		if idx >= p.From && idx < p.To {
			out = append(out, store.Read{BatchID: p.BatchID, Index: idx, At: at})
		}
	}
	slices.SortFunc(out, func(x, y store.Read) int { return cmp.Compare(x.Index, y.Index) })
	return out, nil
}

// RecallBatch implements store.Batches.
func (s *Store) RecallBatch(ctx context.Context, p *store.RecallBatchParams) (*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.batchLocked(p.AppID, p.BatchID)
	if err != nil {
		return nil, err
	}
	if rec.batch.RecalledAt.IsZero() {
		rec.batch.RecalledAt = utc(p.At)
	}
	cancelUnstarted(rec, p.At)
	return copyBatch(&rec.batch), nil
}

// RecallChunk implements store.Batches.
func (s *Store) RecallChunk(ctx context.Context, p *store.RecallChunkParams) (*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, c, err := s.chunkLocked(p.Ref)
	if err != nil {
		return nil, err
	}
	if !c.Done {
		return nil, fmt.Errorf("memstore: recall batch %q chunk %d: not done: %w", p.Ref.BatchID, p.Ref.No, store.ErrConflict)
	}
	for i := range c.Outcomes {
		if c.Outcomes[i].Status == store.OutcomeSent {
			c.Outcomes[i].Status = store.OutcomeRecalled
			rec.batch.Sent--
			rec.batch.Recalled++
		}
	}
	return copyBatch(&rec.batch), nil
}

// PendingRecalls implements store.Batches.
func (s *Store) PendingRecalls(ctx context.Context, p *store.PendingRecallsParams) ([]*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*store.Batch
	for _, a := range s.apps {
		for _, rec := range a.batches {
			b := &rec.batch
			if !b.RecalledAt.IsZero() && !b.RecalledAt.After(p.RecalledBefore) && b.Sent > 0 {
				out = append(out, copyBatch(b))
			}
		}
	}
	slices.SortFunc(out, func(x, y *store.Batch) int {
		return cmp.Or(x.RecalledAt.Compare(y.RecalledAt), cmp.Compare(x.AppID, y.AppID), cmp.Compare(x.ID, y.ID))
	})
	if len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out, nil
}

// DeleteMessages implements store.MessageDeleter.
func (s *Store) DeleteMessages(ctx context.Context, appID string, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.readApp(appID); a != nil {
		for _, id := range ids {
			delete(a.messages, id)
		}
	}
	return nil
}

// ClaimIdempotencyKey implements store.Batches.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, p *store.ClaimIdempotencyKeyParams) (*store.IdempotencyRecord, error) {
	rec, staleBefore := p.Record, p.StaleBefore
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(rec.AppID)
	if old := a.keys[rec.Key]; old != nil {
		live := old.ExpiresAt.After(rec.CreatedAt) && (old.BatchID != "" || !old.CreatedAt.Before(staleBefore))
		if live {
			out := *old
			return &out, fmt.Errorf("memstore: idempotency key %q: %w", rec.Key, store.ErrConflict)
		}
	}
	r := *rec
	r.BatchID, r.Count = "", 0
	r.CreatedAt, r.ExpiresAt = utc(r.CreatedAt), utc(r.ExpiresAt)
	a.keys[rec.Key] = &r
	return nil, nil
}

// ReleaseIdempotencyKey implements store.Batches.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, p *store.ReleaseIdempotencyKeyParams) error {
	appID, key := p.AppID, p.Key
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(appID)
	if r := a.keys[key]; r != nil && r.BatchID == "" {
		delete(a.keys, key)
	}
	return nil
}

// DeleteExpiredIdempotencyKeys implements store.Batches.
func (s *Store) DeleteExpiredIdempotencyKeys(ctx context.Context, p *store.DeleteExpiredIdempotencyKeysParams) (int, error) {
	before, limit := p.Before, p.Limit
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.apps {
		for k, r := range a.keys {
			if n < limit && r.ExpiresAt.Before(before) {
				delete(a.keys, k)
				n++
			}
		}
	}
	return n, nil
}

// CompleteChunk implements store.Batches.
func (s *Store) CompleteChunk(ctx context.Context, p *store.CompleteChunkParams) (*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, c, err := s.chunkLocked(p.Ref)
	if err != nil {
		return nil, err
	}
	if c.Done {
		return nil, fmt.Errorf("memstore: complete batch %q chunk %d: already done: %w", p.Ref.BatchID, p.Ref.No, store.ErrConflict)
	}
	if len(p.Outcomes) != len(c.Recipients) {
		return nil, fmt.Errorf("memstore: complete batch %q chunk %d: %d outcomes for %d recipients", p.Ref.BatchID, p.Ref.No, len(p.Outcomes), len(c.Recipients))
	}
	c.Done = true
	c.Outcomes = slices.Clone(p.Outcomes)
	b := &rec.batch
	for _, o := range p.Outcomes {
		switch o.Status {
		case store.OutcomeSent:
			b.Sent++
		case store.OutcomeFailed:
			b.Failed++
		case store.OutcomeCanceled:
			b.Canceled++
		}
		if o.Push == store.PushFailed {
			b.PushFailed++
		}
	}
	b.ChunksDone++
	if b.ChunksDone == b.Chunks {
		b.FinishedAt = utc(p.At)
	}
	return copyBatch(b), nil
}

// CheckpointChunk implements store.Batches.
func (s *Store) CheckpointChunk(ctx context.Context, p *store.CheckpointChunkParams) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, c, err := s.chunkLocked(p.Ref)
	if err != nil {
		return err
	}
	if c.Done {
		return fmt.Errorf("memstore: checkpoint batch %q chunk %d: already done: %w", p.Ref.BatchID, p.Ref.No, store.ErrConflict)
	}
	if len(p.Outcomes) != len(c.Recipients) {
		return fmt.Errorf("memstore: checkpoint batch %q chunk %d: %d outcomes for %d recipients", p.Ref.BatchID, p.Ref.No, len(p.Outcomes), len(c.Recipients))
	}
	c.Outcomes = slices.Clone(p.Outcomes)
	return nil
}

// PendingChunks implements store.Batches.
func (s *Store) PendingChunks(ctx context.Context, p *store.PendingChunksParams) ([]store.Chunk, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var all []store.Chunk
	for _, a := range s.apps {
		for _, rec := range a.batches {
			paused := !rec.batch.PausedAt.IsZero()
			for _, c := range rec.chunks {
				if c.Done {
					continue
				}
				if (c.StartedAt.IsZero() && !paused && !c.NotBefore.After(p.DueBefore)) ||
					(!c.StartedAt.IsZero() && c.LeaseUntil.Before(p.LeaseExpiredBefore)) {
					c.Recipients, c.Outcomes = nil, nil
					all = append(all, c)
				}
			}
		}
	}
	slices.SortFunc(all, func(x, y store.Chunk) int {
		return cmp.Or(x.NotBefore.Compare(y.NotBefore), cmp.Compare(x.BatchID, y.BatchID), cmp.Compare(x.No, y.No))
	})
	if p.Limit >= 0 && len(all) > p.Limit {
		all = all[:p.Limit]
	}
	return all, nil
}

// Backlog implements store.Batches.
func (s *Store) Backlog(ctx context.Context, p *store.BacklogParams) ([]store.AppBacklog, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []store.AppBacklog{}
	for id, a := range s.apps {
		b := store.AppBacklog{AppID: id}
		for _, rec := range a.batches {
			paused := !rec.batch.PausedAt.IsZero()
			for _, c := range rec.chunks {
				if !c.Done && !c.NotBefore.After(p.DueBefore) && (!paused || !c.StartedAt.IsZero()) {
					b.Chunks++
					b.Recipients += len(c.Recipients)
				}
			}
		}
		if b.Chunks > 0 {
			out = append(out, b)
		}
	}
	return out, nil
}

// ClaimDoneNotifications implements store.Batches.
func (s *Store) ClaimDoneNotifications(ctx context.Context, p *store.ClaimDoneNotificationsParams) ([]*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []*batchRecord
	claimable := func(rec *batchRecord) bool {
		b := &rec.batch
		return b.ChunksDone == b.Chunks && b.NotifiedAt.IsZero() && !b.FinishedAt.After(p.FinishedBefore) && rec.claimedUntil.Before(p.At)
	}
	if p.BatchID != "" {
		if rec, err := s.batchLocked(p.AppID, p.BatchID); err == nil && claimable(rec) {
			recs = append(recs, rec)
		}
	} else {
		for _, a := range s.apps {
			for _, rec := range a.batches {
				if claimable(rec) {
					recs = append(recs, rec)
				}
			}
		}
		slices.SortFunc(recs, func(x, y *batchRecord) int {
			return cmp.Or(x.batch.FinishedAt.Compare(y.batch.FinishedAt), cmp.Compare(x.batch.ID, y.batch.ID))
		})
	}
	if p.Limit >= 0 && len(recs) > p.Limit {
		recs = recs[:p.Limit]
	}
	out := make([]*store.Batch, len(recs))
	for i, rec := range recs {
		rec.claimedUntil = utc(p.Until)
		out[i] = copyBatch(&rec.batch)
	}
	return out, nil
}

// MarkDoneNotified implements store.Batches.
func (s *Store) MarkDoneNotified(ctx context.Context, p *store.MarkDoneNotifiedParams) error {
	appID, id, at := p.AppID, p.BatchID, p.At
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.batchLocked(appID, id)
	if err != nil {
		return err
	}
	if rec.batch.NotifiedAt.IsZero() {
		rec.batch.NotifiedAt = utc(at)
	}
	return nil
}

// PruneBatches implements store.Batches.
func (s *Store) PruneBatches(ctx context.Context, p *store.PruneBatchesParams) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	type doomed struct {
		app      *app
		id       string
		finished time.Time
	}
	var all []doomed
	for _, a := range s.apps {
		for id, rec := range a.batches {
			b := &rec.batch
			if b.FinishedAt.IsZero() || !b.FinishedAt.Before(p.FinishedBefore) || b.NotifiedAt.IsZero() ||
				(!b.RecalledAt.IsZero() && b.Sent > 0) {
				continue
			}
			all = append(all, doomed{a, id, b.FinishedAt})
		}
	}
	slices.SortFunc(all, func(x, y doomed) int { return cmp.Or(x.finished.Compare(y.finished), cmp.Compare(x.id, y.id)) })
	if len(all) > p.Limit {
		all = all[:max(p.Limit, 0)]
	}
	for _, d := range all {
		delete(d.app.batches, d.id)
	}
	return len(all), nil
}

// utc is t in UTC; the zero time stays zero.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func copyMessage(m store.Message) store.Message {
	m.Extra = slices.Clone(m.Extra)
	if m.Fields != nil {
		f := make(map[string]json.RawMessage, len(m.Fields))
		for k, v := range m.Fields {
			f[k] = slices.Clone(v)
		}
		m.Fields = f
	}
	return m
}

func copyBatch(b *store.Batch) *store.Batch {
	out := *b
	out.Payload = slices.Clone(b.Payload)
	return &out
}

func copyChunk(c store.Chunk) store.Chunk {
	rs := make([]store.Recipient, len(c.Recipients))
	for i, r := range c.Recipients {
		r.Vars = maps.Clone(r.Vars)
		rs[i] = r
	}
	c.Recipients = rs
	c.Outcomes = slices.Clone(c.Outcomes)
	return c
}

// DirectRoomID implements store.DirectRoomNamer.
func (s *Store) DirectRoomID(a, b string) string { return s.directRoomID(a, b) }

// ListBatches implements store.Batches.
func (s *Store) ListBatches(ctx context.Context, p *store.ListBatchesParams) ([]*store.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []*store.Batch{}
	a := s.readApp(p.AppID)
	if a == nil {
		return out, nil
	}
	for _, rec := range a.batches {
		b := &rec.batch
		if p.CreatedBy != "" && b.CreatedBy != p.CreatedBy {
			continue
		}
		if len(p.Statuses) > 0 && !slices.Contains(p.Statuses, b.Status(p.Now)) {
			continue
		}
		if (!p.CreatedAfter.IsZero() && !b.CreatedAt.After(p.CreatedAfter)) || (!p.CreatedBefore.IsZero() && !b.CreatedAt.Before(p.CreatedBefore)) {
			continue
		}
		if p.AfterID != "" && (b.CreatedAt.After(p.AfterCreatedAt) || (b.CreatedAt.Equal(p.AfterCreatedAt) && b.ID >= p.AfterID)) {
			continue
		}
		c := copyBatch(b)
		c.Payload = nil
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y *store.Batch) int {
		return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), cmp.Compare(y.ID, x.ID))
	})
	if p.Limit >= 0 && len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out, nil
}
