// Package store defines the storage seams of chatbatch: the host's users and
// rooms ([Directory]), the messages a batch produces ([Messages]) and the
// batch bookkeeping itself ([Batches]).
//
// The interfaces are deliberately thin: all policy (validation, chunking,
// retries, rendering) lives in package batch. An implementation only stores
// and loads. A team that already has users, rooms and messages in its own
// database implements [Directory] and [Messages] on top of it and uses a
// chatbatch adapter (memstore, bunstore) only for [Batches].
//
// Methods that write, or that may grow inputs, take a params struct
// (StartChunk, CompleteChunk, CancelBatch, PendingChunks, …): a new input
// is a new field, not a breaking change. Look-ups by key (MissingUsers,
// RoomMembers, GetBatch, LoadChunk, …) take the key itself: what they are
// asked for is all they will ever need.
//
// Every method is scoped by an application ID: an implementation must never
// return or change data of another app. Implementations must be safe for
// concurrent use by multiple goroutines and processes, must not retry
// failed operations (return the error; the caller retries), and must not
// keep references to slices passed in after the call returns.
//
// Outsiders may implement these interfaces; they are covered by semantic
// versioning. Every implementation should pass [storetest.Run] before it
// is used in production.
//
// [storetest.Run]: https://pkg.go.dev/github.com/chatbatch/chatbatch/store/storetest#Run
package store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when the item asked for does not exist
// in the app. Check it with errors.Is.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned (wrapped) when a write collides with existing
// state: a batch ID that already exists, or a chunk that was already
// completed. Check it with errors.Is.
var ErrConflict = errors.New("store: conflict")

// Store is the whole storage seam. Adapters that keep everything implement
// it; package batch also accepts the three parts separately.
type Store interface {
	Directory
	Messages
	Batches
}

// Directory is the host's view of users and rooms. Package batch uses it
// to check recipients before a batch is accepted and to find the rooms
// messages go to.
type Directory interface {
	// MissingUsers returns the IDs among ids that are not users of app,
	// each once, in the order of their first appearance in ids. It returns
	// an empty slice (not an error) when all exist. ids may contain
	// duplicates and may be long (up to a batch's MaxRecipients):
	// implementations should look them up in bulk.
	MissingUsers(ctx context.Context, app string, ids []string) ([]string, error)

	// MissingRooms is MissingUsers for room IDs.
	MissingRooms(ctx context.Context, app string, ids []string) ([]string, error)

	// DirectRoom returns the ID of the one-on-one room of users a and b in
	// app, creating it with both users as members if it does not exist.
	// The pair is unordered: DirectRoom(a, b) and DirectRoom(b, a) return the
	// same room. Concurrent calls for one pair must create exactly one room.
	// It returns ErrNotFound if a or b is not a user of app. a == b is
	// allowed (a user's room with themself). If a room with the pair's ID
	// exists but a and b are not both members of it, it belongs to another
	// pair whose IDs give the same room ID (the default scheme lower-cases
	// user IDs): DirectRoom returns ErrConflict rather than that room.
	DirectRoom(ctx context.Context, app, a, b string) (string, error)

	// RoomMembers returns the user IDs of the members of each room in
	// roomIDs that exists, keyed by room ID; rooms that do not exist are
	// absent from the map. Member order is unspecified.
	RoomMembers(ctx context.Context, app string, roomIDs []string) (map[string][]string, error)
}

// Messages stores the messages a batch produces.
type Messages interface {
	// SaveMessages stores msgs in app. It is idempotent on Message.ID: a
	// message whose ID already exists in app is left unchanged and is not an
	// error, so a re-run chunk stores nothing twice. Either all new messages
	// are stored or, on error, the caller may call again with the same
	// slice. Every msgs[i].AppID equals app.
	SaveMessages(ctx context.Context, app string, msgs []Message) error
}

// Batches keeps the bookkeeping of batches: the accepted request, its
// recipients split into chunks, and each recipient's outcome. The store is
// the source of truth; the queue only carries references to chunks.
type Batches interface {
	// CreateBatch stores b and its chunks in one transaction: afterwards
	// either all are visible or none is. chunks are numbered 0..len-1 in
	// order and b.Chunks == len(chunks). It returns ErrConflict if a batch
	// with b.ID already exists in b.AppID (nothing is changed then).
	// Counters of b (Sent, Failed, Canceled, ChunksDone) must be zero.
	// In a store that implements IdempotencyKeys, a non-empty
	// b.IdempotencyKey completes that key's in-progress record in the
	// same transaction; if the record is missing or already done,
	// CreateBatch returns ErrConflict and stores nothing.
	CreateBatch(ctx context.Context, b *Batch, chunks []Chunk) error

	// GetBatch returns the batch with its current counters, or ErrNotFound
	// if no batch with that ID exists in app.
	GetBatch(ctx context.Context, app, id string) (*Batch, error)

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
	// chunk is returned unchanged. It returns ErrNotFound like LoadChunk.
	StartChunk(ctx context.Context, p *StartChunkParams) (*Batch, *Chunk, error)

	// RenewChunkLease sets the LeaseUntil of a chunk that is not done to
	// p.Until: the worker processing it is alive. A done chunk is left
	// unchanged, which is not an error. It returns ErrNotFound if the
	// chunk does not exist.
	RenewChunkLease(ctx context.Context, p *RenewChunkLeaseParams) error

	// CompleteChunk records the outcome of every recipient of a pending
	// chunk, marks it done and adds the outcomes to the batch counters
	// (Sent, Failed, Canceled by Status; PushFailed by Push), all in one
	// transaction. When this makes ChunksDone equal Chunks it sets
	// the batch's FinishedAt to p.At. It returns the batch as it is after
	// the update. Exactly one of any number of concurrent calls for one
	// chunk succeeds; the others get ErrConflict and change nothing. It
	// returns ErrNotFound if the chunk does not exist.
	CompleteChunk(ctx context.Context, p *CompleteChunkParams) (*Batch, error)

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

	// PendingChunks lists, across all apps, up to p.Limit chunks that are
	// not done and either not started with NotBefore at or before
	// p.DueBefore, or started with LeaseUntil before p.LeaseExpiredBefore
	// (or never set), oldest NotBefore first (then by batch and chunk
	// number). The chunks come without Recipients and Outcomes. The
	// sweeper uses it to find chunks whose task was lost or whose worker
	// died.
	PendingChunks(ctx context.Context, p *PendingChunksParams) ([]Chunk, error)
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

// Message is one message produced by a batch for one recipient.
type Message struct {
	// ID is deterministic (batch ID and recipient index), so a re-run
	// produces the same ID and hosts can deduplicate deliveries.
	ID string
	// AppID is the application the message belongs to.
	AppID string
	// RoomID is the room the message is posted in.
	RoomID string
	// Receiver is the recipient user for one-on-one sends; "" for room sends.
	Receiver string
	// Sender is the user ID the message is sent as.
	Sender string
	// Type is the request's messageType, such as "text".
	Type string
	// Text is the rendered message.
	Text string
	// Extra is the rendered extra JSON object, or nil when the request had none.
	Extra json.RawMessage
	// Fields holds the request's allow-listed top-level fields as raw JSON, or nil.
	Fields map[string]json.RawMessage
	// BatchID is the batch the message was produced by.
	BatchID string
	// Index is the recipient's position in the request's paras.
	Index int
	// CreatedAt is when the message was produced (UTC).
	CreatedAt time.Time
}

// Batch is one accepted batch request and its progress.
type Batch struct {
	// ID is the batch ID handed back to the client.
	ID string
	// AppID is the application that created the batch.
	AppID string
	// Sender is the user ID the messages are sent as.
	Sender string
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
	// RecalledAt is when the batch was recalled (see Recalls); zero if it
	// was not.
	RecalledAt time.Time
	// NotifiedAt is when the batch's end was reported (see
	// DoneNotifications); zero before, and in stores that do not
	// implement DoneNotifications.
	NotifiedAt time.Time
	// RatePerMinute is the pace of a throttled batch (recipients a
	// minute), 0 when it is not throttled. Stores keep it as created.
	RatePerMinute int
	// IdempotencyKey, when set at CreateBatch, is the Idempotency-Key the
	// batch was created under; see IdempotencyKeys. Stores that do not
	// implement IdempotencyKeys ignore it.
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
	StatusScheduled           Status = "scheduled"
	StatusQueued              Status = "queued"
	StatusRunning             Status = "running"
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
	// the chunk's last checkpoint (see ChunkCheckpoints), or nil.
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

// DirectRoomID is the default ID of the one-on-one room of users a and b:
// IMKit's client scheme, the lower-case hex MD5 of the two user IDs,
// lower-cased, sorted and joined with "_". It is symmetric in a and b.
// Because it lower-cases, user IDs that differ only in case share a room
// ID; hosts whose user IDs are case-sensitive should supply their own
// scheme to the store (memstore.Options.DirectRoomID,
// bunstore.Options.DirectRoomID).
func DirectRoomID(a, b string) string {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if b < a {
		a, b = b, a
	}
	sum := md5.Sum([]byte(a + "_" + b))
	return hex.EncodeToString(sum[:])
}

// DirectRoomNamer is implemented by Directories that can name the
// one-on-one room of two users without creating it. Package batch uses it
// to show, in a dry run, the room each message would go to; without it
// the preview names the receiver only.
type DirectRoomNamer interface {
	// DirectRoomID returns the ID DirectRoom(app, a, b) uses for the pair.
	DirectRoomID(a, b string) string
}

// IdempotencyKeys is implemented by Batches stores that support the
// Idempotency-Key header: a client that retries a request with the same
// key gets the first request's batch instead of a second one. Records are
// scoped by app. The store of Batches must implement it for the header to
// be accepted.
//
// The flow of one request: ClaimIdempotencyKey (in progress), then
// CreateBatch with Batch.IdempotencyKey set, which completes the record
// with the batch's ID and Count in the batch's own transaction, so a
// batch and its key record exist together or not at all; or, if the
// request fails before, ReleaseIdempotencyKey.
type IdempotencyKeys interface {
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

// DirectRoomResolver is implemented by Directories that can find or
// create the one-on-one rooms of one user with many others in one call.
// The batch processor uses it, when present, for every chunk of
// one-on-one recipients instead of a user look-up, a room look-up and
// DirectRoom calls for the rooms that do not exist yet: a store on a
// database answers it in a round trip or two.
type DirectRoomResolver interface {
	// DirectRooms is DirectRoom(ctx, app, a, bs[i]) for every i, in bulk.
	// It returns one result per element of bs, in order: the room of a
	// and bs[i] (created, with both as members, if the pair has none), or
	// the error DirectRoom would return for that pair: ErrNotFound if a
	// or bs[i] is not a user of app, ErrConflict if a room exists under
	// the pair's ID without both as members. bs may hold duplicates and
	// a itself. The returned error is for a failure of the call as a
	// whole (then nothing may have been created, or some rooms were: the
	// call is idempotent, and the caller calls again). It is safe under
	// concurrency with itself and DirectRoom: a pair never gets two
	// rooms, and a room never gets the members of two pairs.
	DirectRooms(ctx context.Context, app, a string, bs []string) ([]DirectRoomResult, error)
}

// DirectRoomResult is the outcome of one pair of
// [DirectRoomResolver.DirectRooms].
type DirectRoomResult struct {
	// Room is the ID of the pair's one-on-one room; "" when Err is set.
	Room string
	// Err is nil, or wraps ErrNotFound or ErrConflict as DirectRoom's
	// error for the pair would.
	Err error
}

// DoneNotifications is implemented by Batches stores that keep track of
// which finished batches have been reported to the host (the OnBatchDone
// callback of package batch), so that the report is made at least once
// even when the process that finished a batch dies before making it, and
// exactly once when nothing dies. A report is claimed for a while, made,
// then marked done; a claim that ran out without the mark is taken over.
type DoneNotifications interface {
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
}

// ClaimDoneNotificationsParams are the arguments of
// [DoneNotifications.ClaimDoneNotifications].
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
// [IdempotencyKeys.ClaimIdempotencyKey].
type ClaimIdempotencyKeyParams struct {
	// Record is the record to store, with an empty BatchID.
	Record *IdempotencyRecord
	// StaleBefore: an in-progress record created before it is taken over.
	StaleBefore time.Time
}

// ReleaseIdempotencyKeyParams are the arguments of
// [IdempotencyKeys.ReleaseIdempotencyKey].
type ReleaseIdempotencyKeyParams struct {
	AppID, Key string
}

// DeleteExpiredIdempotencyKeysParams are the arguments of
// [IdempotencyKeys.DeleteExpiredIdempotencyKeys].
type DeleteExpiredIdempotencyKeysParams struct {
	// Before: records whose ExpiresAt is before it are deleted.
	Before time.Time
	// Limit is the most records deleted.
	Limit int
}

// MarkDoneNotifiedParams are the arguments of
// [DoneNotifications.MarkDoneNotified].
type MarkDoneNotifiedParams struct {
	AppID, BatchID string
	// At is when the report was made (UTC).
	At time.Time
}

// ChunkCheckpoints is implemented by Batches stores that can keep the
// outcomes of a started chunk before it completes. The processor uses it
// when a chunk's messages are stored and delivered but some of their push
// notifications failed transiently: it records the outcomes so far (with
// Push PushPending for the pushes left), and the retry finds them in
// Chunk.Outcomes and only pushes, instead of delivering the messages
// again. Without it the whole chunk is retried (delivery is
// at-least-once either way).
type ChunkCheckpoints interface {
	// CheckpointChunk stores p.Outcomes as the outcomes of a chunk that is
	// not done, without marking it done or changing the batch's counters:
	// LoadChunk and StartChunk return them in Chunk.Outcomes until
	// CompleteChunk replaces them. A later checkpoint replaces an earlier
	// one. It returns ErrConflict, changing nothing, if the chunk is done,
	// and ErrNotFound if it does not exist.
	CheckpointChunk(ctx context.Context, p *CheckpointChunkParams) error
}

// CheckpointChunkParams are the arguments of
// [ChunkCheckpoints.CheckpointChunk].
type CheckpointChunkParams struct {
	Ref ChunkRef
	// Outcomes has exactly one entry per recipient of the chunk, in order.
	Outcomes []Outcome
}

// MessageReader is implemented by Messages stores that can read stored
// messages back by ID. GET /messages/batch?batchID= (IMKit's older query
// for the messages of a batch) needs it; without it that query answers
// 501.
type MessageReader interface {
	// GetMessages returns the messages of app whose IDs are among ids, as
	// SaveMessages stored them, in any order. IDs that are not stored are
	// left out; that is not an error.
	GetMessages(ctx context.Context, app string, ids []string) ([]Message, error)
}

// Recalls is implemented by Batches stores that can recall a batch (POST
// /messages/batch/{batchID}/recall): stop what has not been sent and take
// back what has. Package batch deletes the messages (MessageDeleter) and
// tells the clients (delivery.Retractor); the store keeps the state.
type Recalls interface {
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
}

// RecallBatchParams are the arguments of [Recalls.RecallBatch].
type RecallBatchParams struct {
	AppID, BatchID string
	// At is the time of the recall (UTC).
	At time.Time
}

// RecallChunkParams are the arguments of [Recalls.RecallChunk].
type RecallChunkParams struct {
	Ref ChunkRef
}

// PendingRecallsParams are the arguments of [Recalls.PendingRecalls].
type PendingRecallsParams struct {
	// RecalledBefore selects the batches recalled at or before it.
	RecalledBefore time.Time
	// Limit is the most batches returned.
	Limit int
}

// MessageDeleter is implemented by Messages stores that can delete stored
// messages: what a recall does to the messages it takes back.
type MessageDeleter interface {
	// DeleteMessages deletes the messages of app whose IDs are among ids.
	// IDs that are not stored are ignored, so a repeated call succeeds.
	DeleteMessages(ctx context.Context, app string, ids []string) error
}

// BatchLister is implemented by Batches stores that can list an app's
// batches (GET /messages/batch). Without it that endpoint answers 501.
type BatchLister interface {
	// ListBatches returns up to p.Limit batches of p.AppID, newest first
	// (CreatedAt descending, then ID descending), as GetBatch would but
	// without Payload, that pass the filters of p. A listing continues
	// after the batch (p.AfterCreatedAt, p.AfterID) when p.AfterID is set,
	// so that pages stay stable while new batches arrive.
	ListBatches(ctx context.Context, p *ListBatchesParams) ([]*Batch, error)
}

// ListBatchesParams are the arguments of [BatchLister.ListBatches].
type ListBatchesParams struct {
	AppID string
	// Sender, when set, keeps the batches sent as that user.
	Sender string
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
