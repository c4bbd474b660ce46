package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/render"
	"github.com/chatbatch/chatbatch/store"
)

// finalAttempt reports whether a failure of this attempt at chunk c is
// the last one allowed: asynq will not retry the task, or the chunk has
// been attempted more than Config.MaxRetry times in all (tasks the sweeper
// enqueued again start asynq's count afresh; the store's does not).
func (s *Service) finalAttempt(ctx context.Context, c *store.Chunk) bool {
	if c.Attempts > s.cfg.MaxRetry {
		return true
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}

// chunkRun is the state of one processing attempt of one chunk.
type chunkRun struct {
	s        *Service
	ref      store.ChunkRef
	batch    *store.Batch
	chunk    *store.Chunk
	pl       payload
	text     *render.Template
	extra    *render.JSONTemplate // nil when the batch has no extra
	outcomes []store.Outcome      // Status "" = not decided yet
	texts    []string             // rendered text by recipient; nil when resumed
	log      *slog.Logger
}

// ProcessChunk processes one chunk: it resolves each recipient's room,
// renders and stores the messages, delivers them, pushes if asked, and
// records every recipient's outcome. It is what Processor runs for a
// task; it is exported for hosts that move chunks by other means. It is
// safe to run again for the same chunk, also concurrently: nothing is
// stored twice and the outcome is recorded once.
//
// A recipient that can never succeed (its room or user is gone) is
// recorded as failed and the rest of the chunk goes on. A transient
// failure returns an error so the task is retried; on the last attempt
// the recipients still open are recorded as failed instead. A push that
// fails after the messages were delivered does not fail the recipients:
// the chunk is checkpointed and its retry only pushes, and a push that
// never succeeds is recorded as the recipient's push failure.
func (s *Service) ProcessChunk(ctx context.Context, ref store.ChunkRef) (err error) {
	start := time.Now()
	// The chunk's span is a child of the span that accepted the batch
	// (its context came in the task) and links to it, so a trace viewer
	// that starts a new trace per consumer still finds the request.
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrApp.String(ref.AppID), attrBatch.String(ref.BatchID), attrChunk.Int(ref.No))}
	if trace.SpanContextFromContext(ctx).IsValid() {
		opts = append(opts, trace.WithLinks(trace.LinkFromContext(ctx)))
	}
	ctx, sp := s.tel.tracer.Start(ctx, "chatbatch.chunk", opts...)
	defer func() {
		result := "done"
		if err != nil {
			result = "retry"
		}
		s.tel.chunkDuration.Record(ctx, seconds(time.Since(start)), metric.WithAttributes(attrApp.String(ref.AppID), attrResult.String(result)))
		endSpan(sp, err)
	}()
	log := s.log.With("app", ref.AppID, "batch", ref.BatchID, "chunk", ref.No)
	if n, ok := asynq.GetRetryCount(ctx); ok {
		log = log.With("task_retry", n)
	}
	// Starting the chunk is what keeps a cancel from canceling it: from
	// here on it is this worker's to finish, for as long as it renews the
	// lease. A chunk the cancel got first comes back done.
	now := s.cfg.Now().UTC()
	var b *store.Batch
	var c *store.Chunk
	err = s.storeCall(ctx, "StartChunk", func(ctx context.Context) (err error) {
		b, c, err = s.cfg.Batches.StartChunk(ctx, &store.StartChunkParams{Ref: ref, At: now, LeaseUntil: now.Add(s.cfg.Lease)})
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		log.ErrorContext(ctx, "batch: chunk of a batch that does not exist; dropping the task")
		return fmt.Errorf("batch: %w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		log.WarnContext(ctx, "batch: chunk attempt failed: the chunk could not be started", "err", err)
		return fmt.Errorf("batch: start %s chunk %d: %w", ref.BatchID, ref.No, err)
	}
	if c.Done {
		return nil // a duplicate task: another attempt finished it
	}
	if c.StartedAt.IsZero() {
		// Held back: the batch is paused. ResumeBatch hands the chunk to
		// the queue again.
		log.DebugContext(ctx, "batch: chunk of a paused batch not started")
		return nil
	}
	sp.SetAttributes(attrAttempt.Int(c.Attempts), attrCount.Int(len(c.Recipients)))
	if c.Attempts == 1 {
		s.tel.queueLag.Record(ctx, seconds(max(0, now.Sub(c.NotBefore))), metric.WithAttributes(attrApp.String(ref.AppID)))
	}
	log = log.With("attempt", c.Attempts)
	stop := s.leaseKeeper(ctx, ref)
	defer stop()
	defer func() {
		if err != nil {
			log.WarnContext(ctx, "batch: chunk attempt failed", "err", err)
		}
	}()
	run := &chunkRun{s: s, ref: ref, batch: b, chunk: c, outcomes: make([]store.Outcome, len(c.Recipients)), log: log}
	// A checkpoint means an earlier attempt stored and delivered the
	// messages and only some pushes are left: this attempt only pushes,
	// also when the batch was canceled since (the messages are out).
	resumed := len(c.Outcomes) == len(c.Recipients) && len(c.Outcomes) > 0
	if resumed {
		copy(run.outcomes, c.Outcomes)
		log.InfoContext(ctx, "batch: resuming a chunk's pushes; its messages were delivered by an earlier attempt", "pushes", run.pushesPending())
		if !b.RecalledAt.IsZero() {
			// The messages are being taken back: no push about them.
			run.failPendingPushes("the batch was recalled")
			return run.complete(ctx, start)
		}
	} else if !b.CanceledAt.IsZero() || !b.RecalledAt.IsZero() {
		// Started by an earlier attempt that failed before the cancel (or
		// recall): a retry does not send what the client asked to stop.
		for i := range run.outcomes {
			run.outcomes[i].Status = store.OutcomeCanceled
		}
		return run.complete(ctx, start)
	}
	if err := run.compile(); err != nil {
		// Nothing can be sent from a payload we cannot read; retrying will
		// not change that, so every recipient fails.
		log.ErrorContext(ctx, "batch: unreadable batch payload", "err", err)
		run.failOpen("the batch could not be read")
		return run.complete(ctx, start)
	}
	if !resumed {
		if err := run.send(ctx); err != nil {
			if !s.finalAttempt(ctx, c) {
				return err
			}
			log.ErrorContext(ctx, "batch: chunk failed on its last attempt; recording its open recipients as failed", "err", err)
			// The outcome is shown to API clients: name the step, not the
			// internals (addresses, driver messages) the log has.
			step, _, _ := strings.Cut(err.Error(), ":")
			run.failOpen("gave up after repeated failures (" + step + "); the server log has the cause")
			return run.complete(ctx, start)
		}
	}
	if err := run.push(ctx); err != nil {
		if !s.finalAttempt(ctx, c) {
			run.checkpoint(ctx)
			return err
		}
		// The messages are delivered; a push that keeps failing does not
		// undo that: the recipients stay sent, with a failed push.
		log.ErrorContext(ctx, "batch: push failed on the last attempt; recording the pushes left as failed", "err", err)
		run.failPendingPushes("gave up after repeated failures (push); the server log has the cause")
	}
	return run.complete(ctx, start)
}

// storeCall runs one store call of a worker within Config.StoreTimeout:
// a database that stops answering fails the attempt instead of holding
// the worker.
// It runs in a span chatbatch.store.<op>.
func (s *Service) storeCall(ctx context.Context, op string, f func(context.Context) error) error {
	_, err := bounded(ctx, s, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

// bounded is storeCall for a call with a result. An error other than the
// store's answers ErrNotFound and ErrConflict comes back as a
// storeFailure, so that the sweep can tell a chunk that waits to retry
// because the store failed (see requeue).
func bounded[T any](ctx context.Context, s *Service, op string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	v, err := traced(ctx, s.tel, op, f)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		err = storeFailure{err}
	}
	return v, err
}

// storeFailure is a worker's store call that failed: the database did
// not answer, or failed the call.
type storeFailure struct{ err error }

// storeFailureText begins the text of every storeFailure. asynq keeps a
// failed task's error as text only (TaskInfo.LastErr), and that is how
// the sweep recognizes a task that waits because the store failed.
const storeFailureText = "the store failed: "

func (e storeFailure) Error() string { return storeFailureText + e.err.Error() }
func (e storeFailure) Unwrap() error { return e.err }

// compile decodes the batch payload and compiles its templates once per
// chunk, with the names the batch's paras declare (payload.Declared), as
// the request's dry run did.
func (r *chunkRun) compile() error {
	if err := json.Unmarshal(r.batch.Payload, &r.pl); err != nil {
		return err
	}
	declared := render.NewDeclared(r.pl.Declared...)
	r.text = render.CompileDeclared(r.pl.Message, declared)
	if len(r.pl.Extra) > 0 {
		var err error
		if r.extra, err = render.CompileJSONDeclared(r.pl.Extra, declared); err != nil {
			return fmt.Errorf("compile extra: %w", err)
		}
	}
	return nil
}

// failOpen records every undecided recipient as failed.
func (r *chunkRun) failOpen(reason string) {
	for i := range r.outcomes {
		if r.outcomes[i].Status == "" {
			r.outcomes[i] = store.Outcome{Status: store.OutcomeFailed, Room: r.outcomes[i].Room, MessageID: r.outcomes[i].MessageID, Error: reason}
		}
	}
}

func (r *chunkRun) fail(i int, reason string) {
	r.outcomes[i].Status, r.outcomes[i].Error = store.OutcomeFailed, reason
}

// messageID is deterministic, so every attempt produces the same IDs.
func messageID(batchID string, index int) string { return batchID + "-" + strconv.Itoa(index) }

// send does the work of one attempt. It returns an error only for
// transient failures; permanent ones are recorded in r.outcomes.
func (r *chunkRun) send(ctx context.Context) error {
	dir := r.s.cfg.Directory
	app := r.ref.AppID

	// Rooms named in the request: check they still exist.
	var rooms []string
	for _, rc := range r.chunk.Recipients {
		if rc.Room != "" {
			rooms = append(rooms, rc.Room)
		}
	}
	gone := map[string]bool{}
	if len(rooms) > 0 {
		missing, err := bounded(ctx, r.s, "MissingRooms", func(ctx context.Context) ([]string, error) { return dir.MissingRooms(ctx, app, rooms) })
		if err != nil {
			return fmt.Errorf("look up rooms: %w", err)
		}
		gone = setOf(missing)
	}
	var direct []int // recipients that go to a one-on-one room
	for i, rc := range r.chunk.Recipients {
		switch {
		case rc.Room != "" && gone[rc.Room]:
			r.fail(i, fmt.Sprintf("room %q no longer exists", rc.Room))
		case rc.Room != "":
			r.outcomes[i].Room = rc.Room
		default:
			direct = append(direct, i)
		}
	}
	if err := r.resolveDirectRooms(ctx, direct); err != nil {
		return err
	}

	msgs, idx := r.render()
	if len(msgs) == 0 {
		return nil
	}
	if err := r.s.storeCall(ctx, "SaveMessages", func(ctx context.Context) error { return r.s.cfg.Messages.SaveMessages(ctx, app, msgs) }); err != nil {
		return fmt.Errorf("save messages: %w", err)
	}
	for k, i := range idx {
		r.outcomes[i].MessageID = msgs[k].ID
	}

	// Deliver: a permanent failure fails that recipient, a transient one
	// retries the chunk (delivery is at-least-once, IDs are stable).
	dctx, sp := r.s.tel.span(ctx, "chatbatch.deliver", attrCount.Int(len(msgs)))
	derr := r.s.cfg.Deliverer.Deliver(dctx, msgs)
	endSpan(sp, derr)
	var retry error
	errs := delivery.ItemErrors(derr, len(msgs))
	r.s.tel.countDeliveryErrors(ctx, app, "deliver", errs)
	for k, e := range errs {
		switch {
		case e == nil:
		case delivery.IsPermanent(e):
			r.fail(idx[k], "delivery failed: "+e.Error())
		default:
			retry = e
		}
	}
	if retry != nil {
		return fmt.Errorf("deliver: %w", retry)
	}
	push := r.pl.Push && r.s.cfg.Pusher != nil
	for _, i := range idx {
		if r.outcomes[i].Status == "" {
			r.outcomes[i].Status = store.OutcomeSent
			if push {
				r.outcomes[i].Push = store.PushPending
			}
		}
	}
	return nil
}

// resolveDirectRooms finds the one-on-one room of the sender with each
// receiver in direct (recipient indexes), creating the missing ones. A
// Directory that resolves rooms in bulk (store.DirectRoomResolver) does
// it all in one call. Otherwise users are checked in one bulk look-up,
// rooms that exist are found in another when the Directory can name them
// (store.DirectRoomNamer), and DirectRoom, a round trip each, is left for
// the rest.
func (r *chunkRun) resolveDirectRooms(ctx context.Context, direct []int) error {
	if len(direct) == 0 {
		return nil
	}
	dir := r.s.cfg.Directory
	app, sender := r.ref.AppID, r.batch.Sender
	if resolver := r.s.opt.resolver; resolver != nil {
		receivers := make([]string, len(direct))
		for k, i := range direct {
			receivers[k] = r.chunk.Recipients[i].Receiver
		}
		rooms, err := bounded(ctx, r.s, "DirectRooms", func(ctx context.Context) ([]store.DirectRoomResult, error) {
			return resolver.DirectRooms(ctx, app, sender, receivers)
		})
		if err != nil {
			return fmt.Errorf("one-on-one rooms: %w", err)
		}
		if len(rooms) != len(direct) {
			return fmt.Errorf("one-on-one rooms: the directory returned %d results for %d receivers", len(rooms), len(direct))
		}
		for k, i := range direct {
			if err := r.directRoomResult(i, rooms[k].Room, rooms[k].Err); err != nil {
				return err
			}
		}
		return nil
	}
	users := []string{sender}
	for _, i := range direct {
		users = append(users, r.chunk.Recipients[i].Receiver)
	}
	missing, err := bounded(ctx, r.s, "MissingUsers", func(ctx context.Context) ([]string, error) { return dir.MissingUsers(ctx, app, users) })
	if err != nil {
		return fmt.Errorf("look up users: %w", err)
	}
	gone := setOf(missing)
	var open []int // recipients whose users exist
	for _, i := range direct {
		receiver := r.chunk.Recipients[i].Receiver
		if gone[sender] || gone[receiver] {
			r.fail(i, fmt.Sprintf("user %q or sender %q no longer exists", receiver, sender))
			continue
		}
		open = append(open, i)
	}
	if namer := r.s.opt.namer; namer != nil {
		if open, err = r.existingDirectRooms(ctx, namer, open); err != nil {
			return err
		}
	}
	for _, i := range open {
		id, err := bounded(ctx, r.s, "DirectRoom", func(ctx context.Context) (string, error) {
			return dir.DirectRoom(ctx, app, sender, r.chunk.Recipients[i].Receiver)
		})
		if err := r.directRoomResult(i, id, err); err != nil {
			return err
		}
	}
	return nil
}

// directRoomResult records recipient i's one-on-one room, or why it has
// none. It returns the errors that are not the recipient's (transient).
func (r *chunkRun) directRoomResult(i int, room string, err error) error {
	sender, receiver := r.batch.Sender, r.chunk.Recipients[i].Receiver
	switch {
	case errors.Is(err, store.ErrNotFound):
		r.fail(i, fmt.Sprintf("user %q or sender %q no longer exists", receiver, sender))
	case errors.Is(err, store.ErrConflict):
		r.fail(i, fmt.Sprintf("the one-on-one room of %q and %q has the ID of another pair's room (user IDs that differ only in case?); the store needs a case-preserving DirectRoomID", sender, receiver))
	case err != nil:
		return fmt.Errorf("direct room of %s: %w", receiver, err)
	case room == "":
		return fmt.Errorf("direct room of %s: the directory returned no room and no error", receiver)
	default:
		r.outcomes[i].Room = room
	}
	return nil
}

// existingDirectRooms finds, in one look-up, the rooms of the recipients
// in open that exist with both users as members, and returns the
// recipients left for DirectRoom.
func (r *chunkRun) existingDirectRooms(ctx context.Context, namer store.DirectRoomNamer, open []int) ([]int, error) {
	sender := r.batch.Sender
	ids := make([]string, len(open))
	for k, i := range open {
		ids[k] = namer.DirectRoomID(sender, r.chunk.Recipients[i].Receiver)
	}
	members, err := bounded(ctx, r.s, "RoomMembers", func(ctx context.Context) (map[string][]string, error) {
		return r.s.cfg.Directory.RoomMembers(ctx, r.ref.AppID, ids)
	})
	if err != nil {
		return nil, fmt.Errorf("look up one-on-one rooms: %w", err)
	}
	var left []int
	for k, i := range open {
		m := members[ids[k]]
		if slices.Contains(m, sender) && slices.Contains(m, r.chunk.Recipients[i].Receiver) {
			r.outcomes[i].Room = ids[k]
		} else {
			left = append(left, i)
		}
	}
	return left, nil
}

// render builds the message of every recipient still open; idx[k] is the
// recipient index (within the chunk) of msgs[k].
func (r *chunkRun) render() ([]store.Message, []int) {
	now := r.s.cfg.Now().UTC()
	msgs := make([]store.Message, 0, len(r.chunk.Recipients))
	idx := make([]int, 0, len(r.chunk.Recipients))
	r.texts = make([]string, len(r.chunk.Recipients))
	for i, rc := range r.chunk.Recipients {
		if r.outcomes[i].Status != "" {
			continue
		}
		m := store.Message{
			ID: messageID(r.batch.ID, r.chunk.Start+i), AppID: r.ref.AppID, RoomID: r.outcomes[i].Room,
			Sender: r.batch.Sender, Type: r.pl.MessageType, Text: r.text.Render(rc.Vars),
			Fields: r.pl.Fields, BatchID: r.batch.ID, Index: r.chunk.Start + i, CreatedAt: now,
		}
		if rc.Room == "" {
			m.Receiver = rc.Receiver
		}
		if r.extra != nil {
			m.Extra = r.extra.Render(rc.Vars)
		}
		r.texts[i] = m.Text
		msgs = append(msgs, m)
		idx = append(idx, i)
	}
	return msgs, idx
}

// pushesPending counts the recipients whose push is still to be done.
func (r *chunkRun) pushesPending() int {
	n := 0
	for _, o := range r.outcomes {
		if o.Push == store.PushPending {
			n++
		}
	}
	return n
}

// push sends the push notifications of the recipients whose push is
// pending: to the receiver of a one-on-one message, to every member but
// the sender of a room message. A recipient's push ends sent when all its
// notifications went out, failed when one failed permanently, and stays
// pending when one failed transiently; push then returns an error (the
// attempt is retried, see checkpoint).
func (r *chunkRun) push(ctx context.Context) error {
	var pending []int
	for i, o := range r.outcomes {
		if o.Push == store.PushPending {
			pending = append(pending, i)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	if r.s.cfg.Pusher == nil { // resumed by a worker configured without one
		r.failPendingPushes("no Pusher is configured")
		return nil
	}
	var roomIDs []string
	for _, i := range pending {
		if r.chunk.Recipients[i].Room != "" {
			roomIDs = append(roomIDs, r.outcomes[i].Room)
		}
	}
	members := map[string][]string{}
	if len(roomIDs) > 0 {
		var err error
		if members, err = bounded(ctx, r.s, "RoomMembers", func(ctx context.Context) (map[string][]string, error) {
			return r.s.cfg.Directory.RoomMembers(ctx, r.ref.AppID, roomIDs)
		}); err != nil {
			return fmt.Errorf("push: room members: %w", err)
		}
	}
	var ns []delivery.Notification
	var owner []int // owner[k] is the recipient of ns[k]
	for _, i := range pending {
		o, rc := &r.outcomes[i], &r.chunk.Recipients[i]
		text := ""
		if r.texts != nil {
			text = r.texts[i]
		} else {
			text = r.text.Render(rc.Vars)
		}
		notify := func(user string) {
			ns = append(ns, delivery.Notification{
				AppID: r.ref.AppID, UserID: user, MessageID: o.MessageID, RoomID: o.Room, Sender: r.batch.Sender,
				Type: r.pl.MessageType, Text: text, Badge: !r.pl.SkipTotalBadge,
			})
			owner = append(owner, i)
		}
		if rc.Room == "" {
			notify(rc.Receiver)
			continue
		}
		for _, u := range members[o.Room] {
			if u != r.batch.Sender {
				notify(u)
			}
		}
	}
	var retry error
	failed := map[int]error{} // by recipient: the first permanent failure
	transient := map[int]bool{}
	if len(ns) > 0 {
		pctx, sp := r.s.tel.span(ctx, "chatbatch.push", attrCount.Int(len(ns)))
		perr := r.s.cfg.Pusher.Push(pctx, ns)
		endSpan(sp, perr)
		errs := delivery.ItemErrors(perr, len(ns))
		r.s.tel.countDeliveryErrors(ctx, r.ref.AppID, "push", errs)
		for k, e := range errs {
			switch {
			case e == nil:
			case delivery.IsPermanent(e):
				r.log.WarnContext(ctx, "batch: push failed permanently", "message", ns[k].MessageID, "user", ns[k].UserID, "err", e)
				if failed[owner[k]] == nil {
					failed[owner[k]] = e
				}
			default:
				transient[owner[k]], retry = true, e
			}
		}
	}
	for _, i := range pending {
		switch o := &r.outcomes[i]; {
		case transient[i]:
		case failed[i] != nil:
			o.Push, o.PushError = store.PushFailed, "push failed: "+failed[i].Error()
		default:
			o.Push = store.PushSent
		}
	}
	if retry != nil {
		return fmt.Errorf("push: %w", retry)
	}
	return nil
}

// failPendingPushes records every pending push as failed.
func (r *chunkRun) failPendingPushes(reason string) {
	for i := range r.outcomes {
		if o := &r.outcomes[i]; o.Push == store.PushPending {
			o.Push, o.PushError = store.PushFailed, reason
		}
	}
}

// checkpoint records the outcomes so far of a chunk whose messages are
// delivered and some of whose pushes are left, so that the retry only
// pushes (Batches.CheckpointChunk). When the store fails, the retry does
// the chunk again and delivers again, which the delivery contract allows
// (at-least-once).
func (r *chunkRun) checkpoint(ctx context.Context) {
	if r.pushesPending() == 0 {
		return
	}
	err := r.s.storeCall(ctx, "CheckpointChunk", func(ctx context.Context) error {
		return r.s.cfg.Batches.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: r.ref, Outcomes: r.outcomes})
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		r.log.WarnContext(ctx, "batch: could not checkpoint the chunk; its retry will deliver its messages again", "err", err)
	}
}

// complete records the outcomes. A conflict means another attempt
// completed the chunk first, which is success.
func (r *chunkRun) complete(ctx context.Context, start time.Time) error {
	after, err := bounded(ctx, r.s, "CompleteChunk", func(ctx context.Context) (*store.Batch, error) {
		return r.s.cfg.Batches.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: r.ref, Outcomes: r.outcomes, At: r.s.cfg.Now().UTC()})
	})
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("batch: complete %s chunk %d: %w", r.ref.BatchID, r.ref.No, err)
	}
	r.s.tel.countOutcomes(ctx, r.ref.AppID, r.outcomes)
	if !after.RecalledAt.IsZero() {
		// The batch was recalled while this chunk was in flight: the
		// recall left the chunk to this worker.
		c := &store.Chunk{ChunkRef: r.ref, Start: r.chunk.Start, Recipients: r.chunk.Recipients, Outcomes: r.outcomes, Done: true}
		if recalled, err := r.s.recallChunk(ctx, after, c); err != nil {
			r.log.WarnContext(ctx, "batch: recalling a chunk that completed after its batch was recalled failed; the sweeper retries", "err", err)
		} else if recalled != nil {
			after = recalled
		}
	}
	sent, failed := 0, 0
	for _, o := range r.outcomes {
		switch o.Status {
		case store.OutcomeSent:
			sent++
		case store.OutcomeFailed:
			failed++
		}
	}
	log := r.s.log.With("app", r.ref.AppID, "batch", r.ref.BatchID)
	log.DebugContext(ctx, "batch chunk done", "chunk", r.ref.No, "sent", sent, "failed", failed, "took", time.Since(start))
	if after.Chunks > 1 && after.ChunksDone < after.Chunks {
		done := after.Count - after.Pending()
		rate := float64(done) / max(r.s.cfg.Now().Sub(after.CreatedAt).Seconds(), 0.001)
		log.InfoContext(ctx, "batch progress", "done", done, "total", after.Count, "chunks_done", after.ChunksDone, "chunks", after.Chunks,
			"recipients_per_second", int(rate))
	}
	if after.ChunksDone == after.Chunks {
		defer r.s.batchDone(ctx, after)
		log.InfoContext(ctx, "batch finished", "status", after.Status(r.s.cfg.Now()), "sent", after.Sent, "failed", after.Failed,
			"canceled", after.Canceled, "took", after.FinishedAt.Sub(after.CreatedAt))
	}
	return nil
}
