package batch

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/internal/jsonfields"
	"github.com/chatbatch/chatbatch/store"
)

// batchStatus is the result of GET /messages/batch/{batchID}.
type batchStatus struct {
	BatchID    string       `json:"batchID"`
	Status     store.Status `json:"status"`
	Count      int          `json:"count"`
	Sent       int          `json:"sent"`
	Failed     int          `json:"failed"`
	Pending    int          `json:"pending"`
	Canceled   int          `json:"canceled"`
	PushFailed int          `json:"pushFailed"`
	Recalled   int          `json:"recalled"`
	CreatedAt  time.Time    `json:"createdAt"`
	SendAt     *time.Time   `json:"sendAt,omitempty"`
	FinishedAt *time.Time   `json:"finishedAt,omitempty"`
	CanceledAt *time.Time   `json:"canceledAt,omitempty"`
	RecalledAt *time.Time   `json:"recalledAt,omitempty"`
	// PausedAt is when the batch was paused; absent while it is not.
	PausedAt *time.Time `json:"pausedAt,omitempty"`
	// EstimatedFinishAt, for a throttled batch still running, is when its
	// pace has it end.
	EstimatedFinishAt *time.Time `json:"estimatedFinishAt,omitempty"`
	// Sender is the user the messages are sent as; CreatedBy the user
	// principal that created the batch, absent when an operator did.
	Sender    string `json:"sender,omitempty"`
	CreatedBy string `json:"createdBy,omitempty"`
	// RatePerMinute is the pace of a throttled batch.
	RatePerMinute int `json:"ratePerMinute,omitempty"`
	// Read is how many recipients read their message (MarkRead),
	// ReadRate that ÷ the messages delivered (sent + recalled); both
	// absent when the store could not count them.
	Read     *int     `json:"read,omitempty"`
	ReadRate *float64 `json:"readRate,omitempty"`
	*batchContent
}

// batchContent is what a batch sends, as its request had it (the
// template, not a rendered message): in the answers about one batch, not
// in the list.
type batchContent struct {
	MessageType    string          `json:"messageType"`
	Message        string          `json:"message"`
	Push           bool            `json:"push"`
	SkipTotalBadge bool            `json:"skipTotalBadge,omitempty"`
	Extra          json.RawMessage `json:"extra,omitempty"`
	// Fields are the request's allow-listed extra top-level fields
	// (Config.ExtraFields), nested here so that none collides with a
	// field of the status.
	Fields map[string]json.RawMessage `json:"fields,omitempty"`
}

// statusOf is b as the list shows it.
func (s *Service) statusOf(b *store.Batch) batchStatus {
	out := batchStatus{
		BatchID: b.ID, Status: b.Status(s.cfg.Now()), Count: b.Count, Sent: b.Sent, Failed: b.Failed,
		Pending: b.Pending(), Canceled: b.Canceled, PushFailed: b.PushFailed, Recalled: b.Recalled, CreatedAt: b.CreatedAt.UTC(),
		Sender: b.Sender, CreatedBy: b.CreatedBy, RatePerMinute: b.RatePerMinute,
	}
	out.SendAt, out.FinishedAt, out.CanceledAt, out.RecalledAt = optionalTime(b.SendAt), optionalTime(b.FinishedAt), optionalTime(b.CanceledAt), optionalTime(b.RecalledAt)
	if !b.PausedAt.IsZero() && b.FinishedAt.IsZero() {
		out.PausedAt = optionalTime(b.PausedAt)
	}
	if b.FinishedAt.IsZero() && b.PausedAt.IsZero() && b.RatePerMinute > 0 {
		start := cmp.Or(b.SendAt, b.CreatedAt)
		out.EstimatedFinishAt = optionalTime(start.Add(pacedDuration(b.Count, b.RatePerMinute)))
	}
	return out
}

// withReads sets out's read and readRate from read, b's read count.
func (out *batchStatus) withReads(read int, b *store.Batch) {
	rate := readRate(read, b)
	out.Read, out.ReadRate = &read, &rate
}

// readCounts returns the read counts of bs (ReadCounts), logging a
// failure: the answer then goes without them.
func (s *Service) readCounts(ctx context.Context, app string, bs ...*store.Batch) (map[string]int, bool) {
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	counts, err := s.cfg.Batches.ReadCounts(ctx, &store.ReadCountsParams{AppID: app, BatchIDs: ids})
	if err != nil {
		s.log.WarnContext(ctx, "batch: counting reads failed; answering without them", "app", app, "err", err)
		return nil, false
	}
	return counts, true
}

// detailOf is b as the answers about one batch show it: its status, its
// reads and its content, decoded from the stored payload (left out, and
// logged, if the payload cannot be read).
func (s *Service) detailOf(ctx context.Context, b *store.Batch) batchStatus {
	out := s.statusOf(b)
	if counts, ok := s.readCounts(ctx, b.AppID, b); ok {
		out.withReads(counts[b.ID], b)
	}
	var pl payload
	if err := json.Unmarshal(b.Payload, &pl); err != nil {
		s.log.WarnContext(ctx, "batch: a stored batch payload cannot be decoded; its status is answered without its content", "app", b.AppID, "batch", b.ID, "err", err)
		return out
	}
	out.batchContent = &batchContent{
		MessageType: pl.MessageType, Message: pl.Message, Push: pl.Push, SkipTotalBadge: pl.SkipTotalBadge,
		Extra: pl.Extra, Fields: pl.Fields,
	}
	return out
}

// withPayloadOf is b with the payload of before, the same batch read
// earlier, when b's store call returned it without (the payload never
// changes).
func withPayloadOf(b, before *store.Batch) *store.Batch {
	if b.Payload != nil || before == nil {
		return b
	}
	c := *b
	c.Payload = before.Payload
	return &c
}

// optionalTime is t in UTC for an optional JSON field: nil when t is zero.
func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// batchError is the answer to a failed look-up or change of batch id:
// 404 BATCH_NOT_FOUND for store.ErrNotFound, else the store's failure.
func (s *Service) batchError(ctx context.Context, id, op string, err error) *apiError {
	if errors.Is(err, store.ErrNotFound) {
		return errBatchNotFound(id)
	}
	return s.storeError(ctx, op, err)
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	b, err := s.getBatch(r.Context(), p, id)
	if err != nil {
		writeError(w, s.batchError(r.Context(), id, "get batch", err))
		return
	}
	writeOK(w, s.detailOf(r.Context(), b))
}

// getBatch is GetBatch for principal p: a user principal sees only the
// batches it created; another's is not found, as another app's is.
func (s *Service) getBatch(ctx context.Context, p Principal, id string) (*store.Batch, error) {
	b, err := s.cfg.Batches.GetBatch(ctx, p.AppID, id)
	if err == nil && !p.owns(b) {
		return nil, fmt.Errorf("batch %q another principal created: %w", id, store.ErrNotFound)
	}
	return b, err
}

// handleCancel stops a batch: chunks not started are not processed (their
// recipients end canceled), a chunk in progress finishes.
func (s *Service) handleCancel(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	// The batch before: whose it is, and what it had canceled already (the
	// metric counts only the recipients this cancel stops).
	before, err := s.getBatch(ctx, p, id)
	if err != nil {
		writeError(w, s.batchError(ctx, id, "get batch", err))
		return
	}
	b, err := s.cfg.Batches.CancelBatch(ctx, &store.CancelBatchParams{AppID: p.AppID, BatchID: id, At: s.cfg.Now().UTC()})
	switch {
	case errors.Is(err, store.ErrConflict):
		st := "finished"
		if cur, gerr := s.cfg.Batches.GetBatch(r.Context(), p.AppID, id); gerr == nil {
			st = string(cur.Status(s.cfg.Now()))
		}
		writeError(w, newError(http.StatusConflict, CodeBatchFinished, "batch %q already finished (%s); there is nothing left to cancel", id, st))
		return
	case err != nil:
		writeError(w, s.batchError(ctx, id, "cancel batch", err))
		return
	}
	s.tel.countRecipients(ctx, p.AppID, store.OutcomeCanceled, int64(b.Canceled-before.Canceled))
	s.log.InfoContext(ctx, "batch canceled", "app", p.AppID, "batch", id, "canceled", b.Canceled, "pending", b.Pending())
	if b.ChunksDone == b.Chunks {
		// This cancel finished the batch (no chunk was in progress).
		s.batchDone(context.WithoutCancel(r.Context()), b)
	}
	writeOK(w, s.detailOf(ctx, withPayloadOf(b, before)))
}

// recipient is one entry of GET /messages/batch/{batchID}/recipients.
type recipient struct {
	Index     int    `json:"index"`
	Receiver  string `json:"receiver,omitempty"`
	Room      string `json:"room,omitempty"`
	MessageID string `json:"messageID,omitempty"`
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
	// Push is "sent" or "failed" for a sent recipient whose message asked
	// for a push notification.
	Push      string `json:"push,omitempty"`
	PushError string `json:"pushError,omitempty"`
	// ReadAt is when the recipient first read its message (MarkRead).
	ReadAt *time.Time `json:"readAt,omitempty"`
}

type recipientsPage struct {
	BatchID    string      `json:"batchID"`
	Status     string      `json:"status,omitempty"`
	Read       *bool       `json:"read,omitempty"`
	Offset     int         `json:"offset"`
	Limit      int         `json:"limit"`
	Total      int         `json:"total"`
	Recipients []recipient `json:"recipients"`
	// NextOffset is where the next page starts; absent on the last page.
	NextOffset *int `json:"nextOffset,omitempty"`
}

const (
	defaultRecipientsLimit = 100
	maxRecipientsLimit     = 1000
)

// recipientStatuses are the values of the status filter.
var recipientStatuses = map[string]bool{"pending": true, "sent": true, "failed": true, "canceled": true, "recalled": true}

// handleRecipients lists recipients in para order. offset is a para
// index, so paging is stable while the batch runs: a page never skips or
// repeats a recipient, even with a status filter whose matches change.
func (s *Service) handleRecipients(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	q := r.URL.Query()
	if err := queryParams(q, "offset", "limit", "status", "read"); err != nil {
		writeError(w, err)
		return
	}
	offset, aerr := intParam(q, "offset", 0, 0, int(^uint(0)>>1))
	if aerr == nil {
		var limit int
		limit, aerr = intParam(q, "limit", defaultRecipientsLimit, 1, maxRecipientsLimit)
		if aerr == nil {
			status := q.Get("status")
			var read *bool
			if q.Has("read") {
				var b bool
				if b, aerr = boolParam(q, "read"); aerr == nil {
					read = &b
				}
			}
			switch {
			case aerr != nil:
			case q.Has("status") && !recipientStatuses[status]:
				aerr = paramError("status", "%q is not one of pending, sent, failed, canceled, recalled", status)
			case read != nil && q.Has("status"):
				aerr = paramError("read", "cannot be combined with status: read=true is every recipient who read, read=false every sent one who did not")
			default:
				page, err := s.recipients(r.Context(), p, id, offset, limit, status, read)
				if err == nil {
					writeOK(w, page)
					return
				}
				aerr = s.batchError(r.Context(), id, "list recipients", err)
			}
		}
	}
	writeError(w, aerr)
}

func (s *Service) recipients(ctx context.Context, p Principal, id string, offset, limit int, status string, read *bool) (*recipientsPage, error) {
	app := p.AppID
	b, err := s.getBatch(ctx, p, id)
	if err != nil {
		return nil, err
	}
	page := &recipientsPage{BatchID: id, Status: status, Read: read, Offset: offset, Limit: limit, Recipients: []recipient{}}
	counts, err := s.cfg.Batches.ReadCounts(ctx, &store.ReadCountsParams{AppID: app, BatchIDs: []string{id}})
	if err != nil {
		return nil, err
	}
	nRead := counts[id]
	switch status {
	case "":
		page.Total = b.Count
	case "pending":
		page.Total = b.Pending()
	case "sent":
		page.Total = b.Sent
	case "failed":
		page.Total = b.Failed
	case "canceled":
		page.Total = b.Canceled
	}
	if read != nil && *read {
		page.Total = nRead
	} else if read != nil {
		// Sent and not read; a recall in progress may make it inexact.
		page.Total = max(b.Sent-nRead, 0)
	}
	if offset >= b.Count || b.Chunks == 0 || (read != nil && *read && nRead == 0) {
		return page, nil
	}
	// Chunks are ChunkSize long (as the batch was created) but the last;
	// chunk 0 tells the size, so the first chunk to read is computed, not
	// searched for.
	first, err := s.cfg.Batches.LoadChunk(ctx, store.ChunkRef{AppID: app, BatchID: id, No: 0})
	if err != nil {
		return nil, err
	}
	size := max(len(first.Recipients), 1)
	for no := offset / size; no < b.Chunks; no++ {
		c := first
		if no != 0 {
			if c, err = s.cfg.Batches.LoadChunk(ctx, store.ChunkRef{AppID: app, BatchID: id, No: no}); err != nil {
				return nil, err
			}
		}
		var readAt map[int]time.Time
		if nRead > 0 {
			// The chunk's reads: one range of the reads' key.
			rs, err := s.cfg.Batches.ListReads(ctx, &store.ListReadsParams{AppID: app, BatchID: id, From: c.Start, To: c.Start + len(c.Recipients)})
			if err != nil {
				return nil, err
			}
			readAt = make(map[int]time.Time, len(rs))
			for _, r := range rs {
				readAt[r.Index] = r.At
			}
		}
		for i, rc := range c.Recipients {
			idx := c.Start + i
			if idx < offset {
				continue
			}
			e := recipient{Index: idx, Receiver: rc.Receiver, Room: rc.Room, Status: "pending"}
			if c.Done {
				o := c.Outcomes[i]
				e.Status, e.MessageID, e.Error = string(o.Status), o.MessageID, o.Error
				e.Push, e.PushError = string(o.Push), o.PushError
				if o.Room != "" {
					e.Room = o.Room
				}
			}
			if at, ok := readAt[idx]; ok {
				e.ReadAt = optionalTime(at)
			}
			if status != "" && e.Status != status {
				continue
			}
			if read != nil && (*read != (e.ReadAt != nil) || (!*read && e.Status != string(store.OutcomeSent))) {
				continue
			}
			if len(page.Recipients) == limit {
				next := idx
				page.NextOffset = &next
				return page, nil
			}
			page.Recipients = append(page.Recipients, e)
		}
	}
	return page, nil
}

// Listing: GET BasePath.
const (
	defaultListLimit = 50
	maxListLimit     = 500
)

// batchList is the result of GET /messages/batch.
type batchList struct {
	Batches    []batchStatus `json:"batches"`
	NextCursor string        `json:"nextCursor,omitempty"`
}

// handleList lists the app's batches, newest first, with the filters
// status (repeatable), createdAfter and createdBefore (RFC 3339), limit
// and cursor (the nextCursor of the page before).
func (s *Service) handleList(w http.ResponseWriter, r *http.Request, p Principal) {
	if r.URL.Query().Has("batchID") {
		s.handleBatchMessages(w, r, p)
		return
	}
	q := r.URL.Query()
	statuses := q["status"]
	q.Del("status")
	if aerr := queryParams(q, "createdAfter", "createdBefore", "limit", "cursor"); aerr != nil {
		writeError(w, aerr)
		return
	}
	params := &store.ListBatchesParams{AppID: p.AppID, Now: s.cfg.Now().UTC()}
	if p.ownerOnly() {
		params.CreatedBy = p.UserID
	}
	for _, st := range statuses {
		switch store.Status(st) {
		case store.StatusScheduled, store.StatusQueued, store.StatusRunning, store.StatusPaused, store.StatusCompleted, store.StatusCompletedWithErrors, store.StatusCanceled, store.StatusRecalled:
			params.Statuses = append(params.Statuses, store.Status(st))
		default:
			writeError(w, paramError("status", "%q is not one of scheduled, queued, running, paused, completed, completed_with_errors, canceled, recalled", st))
			return
		}
	}
	for name, dst := range map[string]*time.Time{"createdAfter": &params.CreatedAfter, "createdBefore": &params.CreatedBefore} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				writeError(w, paramError(name, "%q is not an RFC 3339 time such as 2026-04-10T09:00:00Z", v))
				return
			}
			*dst = t.UTC()
		}
	}
	limit, aerr := intParam(q, "limit", defaultListLimit, 1, maxListLimit)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if c := q.Get("cursor"); c != "" {
		at, id, ok := decodeCursor(c)
		if !ok {
			writeError(w, paramError("cursor", "is not a nextCursor this endpoint gave"))
			return
		}
		params.AfterCreatedAt, params.AfterID = at, id
	}
	params.Limit = limit + 1 // one more tells whether there is a next page
	bs, err := s.cfg.Batches.ListBatches(r.Context(), params)
	if err != nil {
		writeError(w, s.storeError(r.Context(), "list batches", err))
		return
	}
	out := batchList{Batches: []batchStatus{}}
	if len(bs) > limit {
		last := bs[limit-1]
		out.NextCursor = encodeCursor(last.CreatedAt, last.ID)
		bs = bs[:limit]
	}
	var counts map[string]int
	if len(bs) > 0 {
		// One query for the page's reads.
		if counts, err = s.cfg.Batches.ReadCounts(r.Context(), &store.ReadCountsParams{AppID: p.AppID, BatchIDs: batchIDs(bs)}); err != nil {
			writeError(w, s.storeError(r.Context(), "read counts", err))
			return
		}
	}
	for _, b := range bs {
		st := s.statusOf(b)
		st.withReads(counts[b.ID], b)
		out.Batches = append(out.Batches, st)
	}
	writeOK(w, out)
}

func batchIDs(bs []*store.Batch) []string {
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids
}

// A cursor is the creation time and ID of the last batch of a page,
// base64url-encoded: opaque to clients, stable while batches are added.
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixNano(), 10) + "." + id))
}

func decodeCursor(c string) (time.Time, string, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", false
	}
	ns, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" || !plausibleID(id) {
		return time.Time{}, "", false
	}
	return time.Unix(0, n).UTC(), id, true
}

// IMKit's older query for a batch's messages: GET BasePath?batchID=.
const (
	defaultBatchMessagesLimit = 50
	maxBatchMessagesLimit     = 500
	// maxBatchMessagesScan bounds the para indexes one page looks at, so a
	// batch whose recipients mostly have no message (failed, canceled,
	// not sent yet) costs a bounded number of look-ups per request; the
	// page then ends early with a nextCursor.
	maxBatchMessagesScan = 5000
)

// batchMessages is the result of GET BasePath?batchID=: IMKit's shape,
// {count, data}, and a nextCursor while there is more.
type batchMessages struct {
	Count      int            `json:"count"`
	Data       []imkitMessage `json:"data"`
	NextCursor string         `json:"nextCursor,omitempty"`
}

// imkitMessage is a stored message as IMKit's API shows one; the
// request's extra top-level fields (Config.ExtraFields) sit beside the
// others, as they were sent.
type imkitMessage struct {
	ID            string          `json:"_id"`
	Room          string          `json:"room"`
	Sender        imkitUser       `json:"sender"`
	Receiver      string          `json:"receiver,omitempty"`
	Message       string          `json:"message"`
	MessageType   string          `json:"messageType"`
	Extra         json.RawMessage `json:"extra,omitempty"`
	MessageTimeMS int64           `json:"messageTimeMS"`
	CreatedAtMS   int64           `json:"createdAtMS"`
	UpdatedAtMS   int64           `json:"updatedAtMS"`
	BatchID       string          `json:"batchID"`
	Index         int             `json:"index"`

	fields map[string]json.RawMessage
}

type imkitUser struct {
	ID string `json:"_id"`
}

func newIMKitMessage(m store.Message) imkitMessage {
	ms := m.CreatedAt.UnixMilli()
	return imkitMessage{
		ID: m.ID, Room: m.RoomID, Sender: imkitUser{m.Sender}, Receiver: m.Receiver, Message: m.Text, MessageType: m.Type,
		Extra: m.Extra, MessageTimeMS: ms, CreatedAtMS: ms, UpdatedAtMS: ms, BatchID: m.BatchID, Index: m.Index, fields: m.Fields,
	}
}

// MarshalJSON writes the fields, then the extra top-level fields that do
// not collide with them, in name order.
func (m imkitMessage) MarshalJSON() ([]byte, error) {
	type plain imkitMessage
	b, err := json.Marshal(plain(m))
	if err != nil {
		return nil, err
	}
	return jsonfields.Append(b, m.fields)
}

// handleBatchMessages answers IMKit's older GET BasePath?batchID=: the
// messages of one batch, newest first by para index (the order the
// batch's chunks are sent in), limit per page, and a cursor. Message IDs
// are deterministic, so a page is read by ID (store.MessageReader) from
// the batch's last para down.
func (s *Service) handleBatchMessages(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	if aerr := queryParams(q, "batchID", "limit", "cursor"); aerr != nil {
		writeError(w, aerr)
		return
	}
	id := q.Get("batchID")
	if id == "" {
		writeError(w, paramError("batchID", "is empty; give the batchID a POST returned"))
		return
	}
	limit, aerr := intParam(q, "limit", defaultBatchMessagesLimit, 1, maxBatchMessagesLimit)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	reader := s.opt.reader
	if reader == nil {
		writeError(w, newError(http.StatusNotImplemented, CodeNotSupported, "this server's message store cannot read messages back by ID; see GET %s/{batchID}/recipients for each recipient's messageID", s.cfg.BasePath))
		return
	}
	b, err := s.getBatch(r.Context(), p, id)
	if err != nil {
		writeError(w, s.batchError(r.Context(), id, "get batch", err))
		return
	}
	next := b.Count - 1 // the para index to look at next
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		n, perr := strconv.Atoi(strings.TrimPrefix(string(raw), "m."))
		if err != nil || perr != nil || !strings.HasPrefix(string(raw), "m.") || n < 0 || n >= b.Count {
			writeError(w, paramError("cursor", "is not a nextCursor this endpoint gave for batch %q", id))
			return
		}
		next = n
	}
	out := batchMessages{Data: []imkitMessage{}}
	stop := max(-1, next-maxBatchMessagesScan) // the first index this page does not look at
	for next > stop && len(out.Data) < limit {
		// One look-up for the window [lo, next]: as many indexes as the
		// page still needs, at least 50 (recipients without a message are
		// skipped).
		lo := next - min(max(limit-len(out.Data), 50), next-stop) + 1
		ids := make([]string, 0, next-lo+1)
		for i := next; i >= lo; i-- {
			ids = append(ids, messageID(b.ID, i))
		}
		msgs, err := reader.GetMessages(r.Context(), p.AppID, ids)
		if err != nil {
			writeError(w, s.storeError(r.Context(), "get messages", err))
			return
		}
		slices.SortFunc(msgs, func(a, b store.Message) int { return b.Index - a.Index })
		full := false
		for _, m := range msgs {
			if m.BatchID != b.ID || m.Index < lo || m.Index > next {
				continue
			}
			if len(out.Data) == limit {
				next, full = m.Index, true // the next page starts here
				break
			}
			out.Data = append(out.Data, newIMKitMessage(m))
		}
		if !full {
			next = lo - 1
		}
	}
	if next >= 0 {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte("m." + strconv.Itoa(next)))
	}
	out.Count = len(out.Data)
	writeOK(w, out)
}
