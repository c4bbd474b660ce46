package store

import (
	"context"
	"time"
)

// Batches is chatbatch's own bookkeeping of batches: the accepted
// request, its recipients split into chunks, each recipient's outcome,
// and the records around them (idempotency keys, recalls, end-of-batch
// reports). The store is the source of truth; the queue only carries
// references to chunks.
//
// Every method is required and package batch uses all of them. Hosts do
// not implement Batches: they use bunstore (beside their own tables with
// its BookkeepingOnly option) or memstore. Unlike Directory and Messages,
// Batches may gain methods in a minor release (see the package
// documentation, "Compatibility").
type Batches interface {
	// Accepting and reading batches.

	// CreateBatch stores b and its chunks in one transaction: afterwards
	// either all are visible or none is. chunks are numbered 0..len-1 in
	// order and b.Chunks == len(chunks). It returns ErrConflict if a batch
	// with b.ID already exists in b.AppID (nothing is changed then).
	// Counters of b (Sent, Failed, Canceled, ChunksDone) must be zero.
	// A non-empty b.IdempotencyKey completes that key's in-progress
	// record (ClaimIdempotencyKey) in the same transaction; if the record
	// is missing or already done, CreateBatch returns ErrConflict and
	// stores nothing.
	CreateBatch(ctx context.Context, b *Batch, chunks []Chunk) error

	// GetBatch returns the batch with its current counters, or ErrNotFound
	// if no batch with that ID exists in app.
	GetBatch(ctx context.Context, app, id string) (*Batch, error)

	// ListBatches returns up to p.Limit batches of p.AppID, newest first
	// (CreatedAt descending, then ID descending), as GetBatch would but
	// without Payload, that pass the filters of p. A listing continues
	// after the batch (p.AfterCreatedAt, p.AfterID) when p.AfterID is set,
	// so that pages stay stable while new batches arrive.
	ListBatches(ctx context.Context, p *ListBatchesParams) ([]*Batch, error)

	// Idempotency keys.
	//
	// A client that retries a request with the same Idempotency-Key gets
	// the first request's batch instead of a second one. Records are
	// scoped by app. The flow of one request: ClaimIdempotencyKey (in
	// progress), then CreateBatch with Batch.IdempotencyKey set, which
	// completes the record with the batch's ID and Count in the batch's
	// own transaction, so a batch and its key record exist together or
	// not at all; or, if the request fails before, ReleaseIdempotencyKey.

	// ClaimIdempotencyKey stores p.Record (with an empty BatchID: in
	// progress) if its AppID has no live record for its Key, and returns
	// nil, nil. A record is live until its ExpiresAt; an in-progress
	// record created before p.StaleBefore belongs to a request that died
	// and is replaced too. Otherwise it changes nothing and returns the live record, in
	// progress or done, with ErrConflict. Of concurrent claims of one key,
	// exactly one succeeds.
	ClaimIdempotencyKey(ctx context.Context, p *ClaimIdempotencyKeyParams) (*IdempotencyRecord, error)

	// ReleaseIdempotencyKey deletes p.AppID's record of p.Key if it is
	// still in progress, so the request can be retried with the same key. A done
	// record is kept; a missing one is not an error.
	ReleaseIdempotencyKey(ctx context.Context, p *ReleaseIdempotencyKeyParams) error

	// DeleteExpiredIdempotencyKeys deletes, across apps, up to p.Limit
	// records whose ExpiresAt is before p.Before, and returns how many it
	// deleted.
	DeleteExpiredIdempotencyKeys(ctx context.Context, p *DeleteExpiredIdempotencyKeysParams) (int, error)

	// Processing chunks.

	// LoadChunk returns one chunk with its recipients and, once completed,
	// its outcomes. It returns ErrNotFound if the batch or the chunk does
	// not exist in ref.AppID.
	LoadChunk(ctx context.Context, ref ChunkRef) (*Chunk, error)

	// StartChunk is LoadChunk for the worker about to process the chunk,
	// and returns the chunk's batch (as GetBatch would) beside it: the
	// worker needs both, and a store can read them in one round trip.
	// If the chunk is not done, StartChunk first, atomically with
	// respect to CancelBatch, sets StartedAt to p.At unless it is set
	// already, adds one to Attempts and sets LeaseUntil to
	// p.LeaseUntil: a chunk is either started (and CancelBatch leaves it
	// to finish) or canceled (and returned Done), never both. A done
	// chunk is returned unchanged. A chunk not started of a paused batch
	// (PauseBatch) is not started either, atomically with respect to
	// PauseBatch: it is returned unchanged, with StartedAt zero and the
	// batch's PausedAt set. It returns ErrNotFound like LoadChunk.
	StartChunk(ctx context.Context, p *StartChunkParams) (*Batch, *Chunk, error)

	// RenewChunkLease sets the LeaseUntil of a chunk that is not done to
	// p.Until: the worker processing it is alive. A done chunk is left
	// unchanged, which is not an error. It returns ErrNotFound if the
	// chunk does not exist.
	RenewChunkLease(ctx context.Context, p *RenewChunkLeaseParams) error

	// CheckpointChunk stores p.Outcomes as the outcomes of a chunk that is
	// not done, without marking it done or changing the batch's counters:
	// LoadChunk and StartChunk return them in Chunk.Outcomes until
	// CompleteChunk replaces them. A later checkpoint replaces an earlier
	// one. It returns ErrConflict, changing nothing, if the chunk is done,
	// and ErrNotFound if it does not exist. The processor checkpoints a
	// chunk whose messages are stored and delivered but some of whose push
	// notifications failed transiently (Push PushPending for the pushes
	// left), so that the retry only pushes instead of delivering again.
	CheckpointChunk(ctx context.Context, p *CheckpointChunkParams) error

	// CompleteChunk records the outcome of every recipient of a pending
	// chunk, marks it done and adds the outcomes to the batch counters
	// (Sent, Failed, Canceled by Status; PushFailed by Push), all in one
	// transaction. When this makes ChunksDone equal Chunks it sets
	// the batch's FinishedAt to p.At. It returns the batch as it is after
	// the update. Exactly one of any number of concurrent calls for one
	// chunk succeeds; the others get ErrConflict and change nothing. It
	// returns ErrNotFound if the chunk does not exist.
	CompleteChunk(ctx context.Context, p *CompleteChunkParams) (*Batch, error)

	// PendingChunks lists, across all apps, up to p.Limit chunks that are
	// not done and either not started with NotBefore at or before
	// p.DueBefore, or started with LeaseUntil before p.LeaseExpiredBefore
	// (or never set), oldest NotBefore first (then by batch and chunk
	// number). Chunks not started of a paused batch are left out. The
	// chunks come without Recipients and Outcomes. The sweeper uses it to
	// find chunks whose task was lost or whose worker died.
	PendingChunks(ctx context.Context, p *PendingChunksParams) ([]Chunk, error)

	// Backlog sums, per app, the chunks that are due (NotBefore at or
	// before p.DueBefore) and not done, and their recipients: the work
	// before the workers now. Chunks of scheduled or paced batches that
	// are not due yet do not count, nor chunks not started of a paused
	// batch. Apps with no such chunk are left
	// out; the order is unspecified. Admission control (batch's
	// Config.Admission) reads it every second or so, so it should be one
	// cheap query (bunstore's uses the pending chunks' index).
	Backlog(ctx context.Context, p *BacklogParams) ([]AppBacklog, error)

	// Pausing and resuming.
	//
	// A pause (POST /messages/batch/{batchID}/pause) stops a batch from
	// starting chunks until it is resumed; a chunk started before the
	// pause finishes. The pause is kept in the store, so it survives
	// restarts and a lost queue.

	// PauseBatch sets the PausedAt of batch p.BatchID of p.AppID to p.At
	// unless it is set already, and returns the batch after the update.
	// From then on, until ResumeBatch, StartChunk starts none of the
	// batch's chunks that are not started, PendingChunks and Backlog
	// leave those chunks out; chunks started before are left to finish
	// (and PendingChunks still lists them when their lease runs out).
	// CancelBatch and RecallBatch work on a paused batch as on any other.
	// It returns ErrConflict, changing nothing, if the batch is finished
	// (ChunksDone == Chunks), canceled or recalled, and ErrNotFound if it
	// does not exist in the app. Pausing a paused batch changes nothing.
	PauseBatch(ctx context.Context, p *PauseBatchParams) (*Batch, error)

	// ResumeBatch clears the PausedAt of batch p.BatchID of p.AppID and,
	// in the same transaction, when the batch is paced (RatePerMinute >
	// 0), moves the NotBefore of each of its chunks neither done nor
	// started later by p.At minus PausedAt, so that its pace goes on
	// from where it stopped. It returns the batch after the update and
	// the chunks neither done nor started (without Recipients and
	// Outcomes, in chunk order), for the caller to hand to the queue;
	// resuming a batch that is not paused changes nothing and returns no
	// chunks. It returns ErrConflict, changing nothing, if the batch is
	// finished, canceled or recalled, and ErrNotFound if it does not
	// exist in the app.
	ResumeBatch(ctx context.Context, p *ResumeBatchParams) (*Batch, []Chunk, error)

	// Canceling and recalling.
	//
	// A recall (POST /messages/batch/{batchID}/recall) stops what has not
	// been sent and takes back what has: package batch deletes the
	// messages (MessageDeleter) and tells the clients
	// (delivery.Retractor); Batches keeps the state.

	// CancelBatch cancels batch p.BatchID of p.AppID in one transaction: it
	// sets CanceledAt to p.At (if not set yet) and completes every chunk that is neither done
	// nor started with an OutcomeCanceled for each of its recipients,
	// adding them to Canceled and ChunksDone (and setting FinishedAt to
	// p.At if that finishes the batch). Started chunks are left to finish. It
	// returns the batch after the update. It returns ErrConflict, changing
	// nothing, if the batch was already finished (ChunksDone == Chunks),
	// and ErrNotFound if it does not exist in app. Canceling a batch that
	// is canceled but not finished is not an error.
	CancelBatch(ctx context.Context, p *CancelBatchParams) (*Batch, error)

	// RecallBatch sets the RecalledAt of batch p.BatchID of p.AppID to p.At
	// unless it is set already and, in the same transaction, completes
	// the chunks neither done nor started with OutcomeCanceled outcomes as
	// CancelBatch does (adding to Canceled and ChunksDone, setting
	// FinishedAt if that finishes the batch; CanceledAt is left alone).
	// Started chunks are left to finish, like a cancel. A finished batch
	// can be recalled. It returns the batch after the update, or
	// ErrNotFound if it does not exist in the app. Recalling a recalled
	// batch changes nothing.
	RecallBatch(ctx context.Context, p *RecallBatchParams) (*Batch, error)

	// RecallChunk records that the messages of a done chunk were recalled:
	// every outcome with Status OutcomeSent becomes OutcomeRecalled, and
	// the batch's Sent and Recalled counters move by their number, in one
	// transaction. Outcomes already recalled are left alone, so a second
	// call changes nothing. It returns the batch after the update;
	// ErrNotFound if the chunk does not exist; ErrConflict, changing
	// nothing, if the chunk is not done.
	RecallChunk(ctx context.Context, p *RecallChunkParams) (*Batch, error)

	// PendingRecalls lists, across apps, up to p.Limit batches recalled at
	// or before p.RecalledBefore that still have Sent recipients (a recall
	// interrupted by a crash, or a chunk that completed while the batch
	// was recalled), oldest recall first, as GetBatch returns them.
	PendingRecalls(ctx context.Context, p *PendingRecallsParams) ([]*Batch, error)

	// Reads.
	//
	// A read is the first time a recipient's message was read, as the
	// host's read receipts report it (package batch maps a message ID,
	// "<batchID>-<para index>", back to its recipient and decides which
	// reads count). Recording reads must stay cheap however many arrive
	// for one batch: it never writes the batch's row.

	// RecordReads records each of p.Reads of app p.AppID unless its
	// recipient (batch, para index) has a read already: the first read is
	// kept, a later one skipped, also within p.Reads. Each read names the
	// chunk that holds its para index (the caller has looked); a read of
	// a chunk that does not exist (a batch pruned meanwhile) is skipped.
	// It returns how many reads it recorded. It must be safe for
	// concurrent use, and concurrent calls about one batch must not queue
	// on one row (the batch's): a store may keep a count per chunk, never
	// per batch. p.Reads is the caller's; the store does not keep it.
	RecordReads(ctx context.Context, p *RecordReadsParams) (int, error)

	// ReadCounts returns, for each of p.BatchIDs of app p.AppID that has
	// recorded reads, how many of its recipients have one; batches
	// without reads, and batches that do not exist, are left out. One
	// call answers a page of the list, so it should be one query.
	ReadCounts(ctx context.Context, p *ReadCountsParams) (map[string]int, error)

	// ListReads returns the reads of batch p.BatchID of app p.AppID whose
	// para index is in [p.From, p.To), in index order (none for a batch
	// that does not exist).
	ListReads(ctx context.Context, p *ListReadsParams) ([]Read, error)

	// Reporting finished batches.
	//
	// Batches keeps track of which finished batches have been reported to
	// the host (the OnBatchDone callback of package batch), so that the
	// report is made at least once even when the process that finished a
	// batch dies before making it, and exactly once when nothing dies. A
	// report is claimed for a while, made, then marked done; a claim that
	// ran out without the mark is taken over.

	// ClaimDoneNotifications claims, across apps (or only the batch
	// p.AppID/p.BatchID when p.BatchID is set), up to p.Limit batches
	// that are finished (ChunksDone == Chunks) at or before
	// p.FinishedBefore, have no NotifiedAt and are not claimed, or only
	// by a claim that ended before p.At. Each is claimed until p.Until
	// and returned as GetBatch would. Of concurrent claims of one batch
	// exactly one gets it.
	ClaimDoneNotifications(ctx context.Context, p *ClaimDoneNotificationsParams) ([]*Batch, error)

	// MarkDoneNotified sets the NotifiedAt of batch p.BatchID of p.AppID
	// to p.At: the report was made. Marking a batch marked already
	// changes nothing. It returns ErrNotFound if the batch does not exist
	// in the app.
	MarkDoneNotified(ctx context.Context, p *MarkDoneNotifiedParams) error

	// Retention.

	// PruneBatches deletes, across apps, up to p.Limit batches that
	// finished before p.FinishedBefore, oldest FinishedAt first, with
	// their chunks (recipients and outcomes) and reads, and nothing else: never a
	// message (SaveMessages' rows are the host's). A batch whose end is
	// not reported yet (NotifiedAt zero) or whose recall is not done
	// (RecalledAt set and Sent > 0) is kept. It returns how many batches
	// it deleted; afterwards GetBatch and LoadChunk return ErrNotFound for
	// them, ListBatches leaves them out and ListReads has none. A call deletes few enough rows
	// to hold no long lock (the sweep calls it with a small Limit, again
	// and again); concurrent calls may overlap, each batch is deleted once.
	PruneBatches(ctx context.Context, p *PruneBatchesParams) (int, error)
}

// StartChunkParams are the arguments of [Batches.StartChunk].
type StartChunkParams struct {
	Ref ChunkRef
	// At is the time the chunk is started (UTC).
	At time.Time
	// LeaseUntil is how long the chunk is the starting worker's: until
	// then the sweeper takes the worker for alive (UTC).
	LeaseUntil time.Time
}

// RenewChunkLeaseParams are the arguments of [Batches.RenewChunkLease].
type RenewChunkLeaseParams struct {
	Ref ChunkRef
	// Until is the new LeaseUntil (UTC).
	Until time.Time
}

// Read is the first read of one recipient's message
// ([Batches.RecordReads]).
type Read struct {
	BatchID string
	// Chunk is the number of the chunk that holds Index (RecordReads
	// takes it; ListReads leaves it zero).
	Chunk int
	// Index is the recipient's para index.
	Index int
	// At is when the message was read (UTC).
	At time.Time
}

// RecordReadsParams are the arguments of [Batches.RecordReads].
type RecordReadsParams struct {
	AppID string
	Reads []Read
}

// ReadCountsParams are the arguments of [Batches.ReadCounts].
type ReadCountsParams struct {
	AppID    string
	BatchIDs []string
}

// ListReadsParams are the arguments of [Batches.ListReads].
type ListReadsParams struct {
	AppID, BatchID string
	// From and To bound the para indexes: From <= index < To.
	From, To int
}

// PauseBatchParams are the arguments of [Batches.PauseBatch].
type PauseBatchParams struct {
	AppID, BatchID string
	// At is the time of the pause (UTC).
	At time.Time
}

// ResumeBatchParams are the arguments of [Batches.ResumeBatch].
type ResumeBatchParams struct {
	AppID, BatchID string
	// At is the time of the resume (UTC).
	At time.Time
}

// PruneBatchesParams are the arguments of [Batches.PruneBatches].
type PruneBatchesParams struct {
	// FinishedBefore selects the batches that finished before it.
	FinishedBefore time.Time
	// Limit is the most batches deleted.
	Limit int
}

// BacklogParams are the arguments of [Batches.Backlog].
type BacklogParams struct {
	// DueBefore selects the chunks due at or before it (now).
	DueBefore time.Time
}

// AppBacklog is one app's due, unfinished work ([Batches.Backlog]).
type AppBacklog struct {
	AppID string
	// Chunks is how many chunks are due and not done.
	Chunks int
	// Recipients is how many recipients those chunks hold.
	Recipients int
}

// PendingChunksParams are the arguments of [Batches.PendingChunks].
type PendingChunksParams struct {
	// DueBefore selects the chunks not started yet that were due at or
	// before it.
	DueBefore time.Time
	// LeaseExpiredBefore selects the started chunks whose lease ended
	// before it.
	LeaseExpiredBefore time.Time
	// Limit is the most chunks returned.
	Limit int
}

// Batch is one accepted batch request and its progress.
type Batch struct {
	// ID is the batch ID handed back to the client.
	ID string
	// AppID is the application that created the batch.
	AppID string
	// Sender is the user ID the messages are sent as.
	Sender string
	// CreatedBy is the user ID of the user principal that created the
	// batch, or "" when an operator did (an admin key or principal, or an
	// app key without a user). It decides who may see and control the
	// batch, whatever its Sender. Stores keep it as created.
	CreatedBy string
	// Count is the number of recipients (len(paras)).
	Count int
	// Chunks is the number of chunks the recipients are split into.
	Chunks int
	// Payload is the batch's template and options, encoded by package batch.
	// Stores keep it byte-exact and never interpret it.
	Payload []byte
	// CreatedAt is when the batch was accepted (UTC).
	CreatedAt time.Time
	// SendAt is when the batch is scheduled to start; zero means at once.
	SendAt time.Time
	// FinishedAt is when the last chunk completed; zero while running.
	FinishedAt time.Time
	// CanceledAt is when the batch was canceled; zero if it was not.
	CanceledAt time.Time
	// RecalledAt is when the batch was recalled (Batches.RecallBatch);
	// zero if it was not.
	RecalledAt time.Time
	// PausedAt is when the batch was paused (Batches.PauseBatch); zero
	// while it is not paused.
	PausedAt time.Time
	// NotifiedAt is when the batch's end was reported
	// (Batches.MarkDoneNotified); zero before.
	NotifiedAt time.Time
	// RatePerMinute is the pace of a throttled batch (recipients a
	// minute), 0 when it is not throttled. Stores keep it as created.
	RatePerMinute int
	// IdempotencyKey, when set at CreateBatch, is the Idempotency-Key the
	// batch was created under; CreateBatch completes that key's record.
	IdempotencyKey string

	// Counters maintained by the store.

	// Sent is the number of recipients whose message was stored and delivered.
	Sent int
	// Failed is the number of recipients recorded as failed.
	Failed int
	// Canceled is the number of recipients not processed because the batch was canceled.
	Canceled int
	// ChunksDone is the number of completed chunks.
	ChunksDone int
	// PushFailed is the number of sent recipients whose push notification
	// failed (Outcome.Push == PushFailed); they count in Sent (or
	// Recalled) as well.
	PushFailed int
	// Recalled is the number of recipients whose sent message was recalled
	// (Outcome.Status OutcomeRecalled); they no longer count in Sent.
	Recalled int
}

// Pending is the number of recipients without an outcome yet.
func (b *Batch) Pending() int { return b.Count - b.Sent - b.Failed - b.Canceled - b.Recalled }

// Status derives the batch's state from its counters and times.
func (b *Batch) Status(now time.Time) Status {
	switch {
	case !b.RecalledAt.IsZero():
		return StatusRecalled
	case !b.CanceledAt.IsZero():
		return StatusCanceled
	case b.ChunksDone >= b.Chunks && b.Failed > 0:
		return StatusCompletedWithErrors
	case b.ChunksDone >= b.Chunks:
		return StatusCompleted
	case !b.PausedAt.IsZero():
		return StatusPaused
	case b.ChunksDone > 0:
		return StatusRunning
	case !b.SendAt.IsZero() && now.Before(b.SendAt):
		return StatusScheduled
	default:
		return StatusQueued
	}
}

// Status is the state of a batch as reported by the API.
type Status string

// The states of a batch.
const (
	StatusScheduled Status = "scheduled"
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	// StatusPaused is a batch paused before it finished: no chunk starts
	// until it is resumed.
	StatusPaused              Status = "paused"
	StatusCompleted           Status = "completed"
	StatusCompletedWithErrors Status = "completed_with_errors"
	StatusCanceled            Status = "canceled"
	StatusRecalled            Status = "recalled"
)

// ChunkRef names one chunk of one batch.
type ChunkRef struct {
	AppID   string
	BatchID string
	No      int
}

// Chunk is a slice of a batch's recipients processed as one queue task.
type Chunk struct {
	ChunkRef
	// Start is the para index of Recipients[0].
	Start int
	// Recipients are the chunk's paras in request order.
	Recipients []Recipient
	// NotBefore is the earliest time the chunk may be processed: the batch's
	// SendAt, or its CreatedAt when it is not scheduled (UTC).
	NotBefore time.Time
	// StartedAt is when a worker first started the chunk; zero before.
	StartedAt time.Time
	// Attempts counts the StartChunk calls that found the chunk not done:
	// how often a worker has begun to process it.
	Attempts int
	// LeaseUntil is when the last worker to start or renew the chunk is
	// taken for dead if the chunk is not done by then; zero before the
	// chunk is started.
	LeaseUntil time.Time
	// Done reports whether the chunk has been completed.
	Done bool
	// Outcomes has one entry per recipient once Done. Before that it is
	// the chunk's last checkpoint (Batches.CheckpointChunk), or nil.
	Outcomes []Outcome
}

// Recipient is one para of the request.
type Recipient struct {
	// Receiver is the recipient user ID; "" when only Room is set.
	Receiver string `json:"receiver,omitempty"`
	// Room is the room ID; when set it wins over Receiver.
	Room string `json:"room,omitempty"`
	// Vars maps a template variable name (without dollars) to its value.
	Vars map[string]string `json:"vars,omitempty"`
}

// OutcomeStatus is the result for one recipient.
type OutcomeStatus string

// The outcomes of a recipient.
const (
	OutcomeSent     OutcomeStatus = "sent"
	OutcomeFailed   OutcomeStatus = "failed"
	OutcomeCanceled OutcomeStatus = "canceled"
	// OutcomeRecalled is a sent recipient whose message was recalled.
	OutcomeRecalled OutcomeStatus = "recalled"
)

// Outcome is what happened to one recipient.
type Outcome struct {
	Status OutcomeStatus `json:"status"`
	// Room is the room the message went to ("" if it failed before one was found).
	Room string `json:"room,omitempty"`
	// MessageID is the ID of the stored message ("" if none was stored).
	MessageID string `json:"messageID,omitempty"`
	// Error says why the recipient failed; "" otherwise.
	Error string `json:"error,omitempty"`
	// Push is the state of the push notification of a sent recipient:
	// "" when none was asked for.
	Push PushStatus `json:"push,omitempty"`
	// PushError says why the push failed; "" otherwise.
	PushError string `json:"pushError,omitempty"`
}

// PushStatus is the state of a sent recipient's push notification.
type PushStatus string

// The push states of a recipient. PushPending appears only in a
// checkpoint: the message was delivered and its push is still to be done.
const (
	PushPending PushStatus = "pending"
	PushSent    PushStatus = "sent"
	PushFailed  PushStatus = "failed"
)

// CompleteChunkParams are the arguments of [Batches.CompleteChunk].
type CompleteChunkParams struct {
	Ref ChunkRef
	// Outcomes has exactly one entry per recipient of the chunk, in order.
	Outcomes []Outcome
	// At is the completion time (UTC).
	At time.Time
}

// IdempotencyRecord is what a store keeps for one Idempotency-Key.
type IdempotencyRecord struct {
	AppID string
	Key   string
	// RequestHash identifies the request body; a different body under the
	// same key is refused.
	RequestHash string
	// BatchID and Count are the accepted batch; BatchID is "" while the
	// request is in progress.
	BatchID string
	Count   int
	// CreatedAt is when the key was claimed; ExpiresAt when it may be reused.
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ClaimDoneNotificationsParams are the arguments of
// [Batches.ClaimDoneNotifications].
type ClaimDoneNotificationsParams struct {
	// AppID and BatchID, when BatchID is set, restrict the claim to that
	// batch.
	AppID, BatchID string
	// FinishedBefore selects the batches whose FinishedAt is at or before it.
	FinishedBefore time.Time
	// At is now: claims that ended before it are taken over.
	At time.Time
	// Until is when the new claims end (UTC).
	Until time.Time
	// Limit is the most batches claimed.
	Limit int
}

// CancelBatchParams are the arguments of [Batches.CancelBatch].
type CancelBatchParams struct {
	AppID, BatchID string
	// At is the time of the cancel (UTC).
	At time.Time
}

// ClaimIdempotencyKeyParams are the arguments of
// [Batches.ClaimIdempotencyKey].
type ClaimIdempotencyKeyParams struct {
	// Record is the record to store, with an empty BatchID.
	Record *IdempotencyRecord
	// StaleBefore: an in-progress record created before it is taken over.
	StaleBefore time.Time
}

// ReleaseIdempotencyKeyParams are the arguments of
// [Batches.ReleaseIdempotencyKey].
type ReleaseIdempotencyKeyParams struct {
	AppID, Key string
}

// DeleteExpiredIdempotencyKeysParams are the arguments of
// [Batches.DeleteExpiredIdempotencyKeys].
type DeleteExpiredIdempotencyKeysParams struct {
	// Before: records whose ExpiresAt is before it are deleted.
	Before time.Time
	// Limit is the most records deleted.
	Limit int
}

// MarkDoneNotifiedParams are the arguments of
// [Batches.MarkDoneNotified].
type MarkDoneNotifiedParams struct {
	AppID, BatchID string
	// At is when the report was made (UTC).
	At time.Time
}

// CheckpointChunkParams are the arguments of
// [Batches.CheckpointChunk].
type CheckpointChunkParams struct {
	Ref ChunkRef
	// Outcomes has exactly one entry per recipient of the chunk, in order.
	Outcomes []Outcome
}

// RecallBatchParams are the arguments of [Batches.RecallBatch].
type RecallBatchParams struct {
	AppID, BatchID string
	// At is the time of the recall (UTC).
	At time.Time
}

// RecallChunkParams are the arguments of [Batches.RecallChunk].
type RecallChunkParams struct {
	Ref ChunkRef
}

// PendingRecallsParams are the arguments of [Batches.PendingRecalls].
type PendingRecallsParams struct {
	// RecalledBefore selects the batches recalled at or before it.
	RecalledBefore time.Time
	// Limit is the most batches returned.
	Limit int
}

// ListBatchesParams are the arguments of [Batches.ListBatches].
type ListBatchesParams struct {
	AppID string
	// CreatedBy, when set, keeps the batches whose CreatedBy is that
	// user (a user principal's own batches).
	CreatedBy string
	// Statuses, when not empty, keeps the batches whose Status(Now) is
	// one of them.
	Statuses []Status
	// Now is the time Statuses are judged at (scheduled vs queued).
	Now time.Time
	// CreatedAfter and CreatedBefore, when set, keep the batches created
	// after / before them (exclusive).
	CreatedAfter, CreatedBefore time.Time
	// AfterCreatedAt and AfterID, when AfterID is set, continue a listing
	// after that batch.
	AfterCreatedAt time.Time
	AfterID        string
	// Limit is the most batches returned.
	Limit int
}
