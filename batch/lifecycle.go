package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/chatbatch/chatbatch/render"
	"github.com/chatbatch/chatbatch/store"
)

// BatchSummary describes a batch that reached a final state; it is what
// Config.OnBatchDone receives.
type BatchSummary struct {
	AppID      string
	BatchID    string
	Status     store.Status
	Count      int
	Sent       int
	Failed     int
	Canceled   int
	CreatedAt  time.Time
	FinishedAt time.Time
}

func summaryOf(b *store.Batch, now time.Time) BatchSummary {
	return BatchSummary{
		AppID: b.AppID, BatchID: b.ID, Status: b.Status(now), Count: b.Count, Sent: b.Sent,
		Failed: b.Failed, Canceled: b.Canceled, CreatedAt: b.CreatedAt, FinishedAt: b.FinishedAt,
	}
}

// queryParams checks that q has only the allowed keys, each once.
func queryParams(q url.Values, allowed ...string) *apiError {
	for k, v := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			if len(allowed) == 0 {
				return newError(http.StatusBadRequest, CodeInvalidParameter, "unknown query parameter %q; this endpoint takes none", k).with(Detail{Field: k, Reason: "unknown query parameter"})
			}
			return newError(http.StatusBadRequest, CodeInvalidParameter, "unknown query parameter %q; this endpoint takes %v", k, allowed).with(Detail{Field: k, Reason: "unknown query parameter"})
		}
		if len(v) > 1 {
			return newError(http.StatusBadRequest, CodeInvalidParameter, "query parameter %q is given %d times", k, len(v)).with(Detail{Field: k, Reason: "given more than once"})
		}
	}
	return nil
}

func paramError(name, format string, args ...any) *apiError {
	reason := fmt.Sprintf(format, args...)
	return newError(http.StatusBadRequest, CodeInvalidParameter, "%s: %s", name, reason).with(Detail{Field: name, Reason: reason})
}

// intParam parses an optional non-negative integer parameter; above max it is capped.
func intParam(q url.Values, name string, def, lo, max int) (int, *apiError) {
	v := q.Get(name)
	if v == "" {
		if q.Has(name) {
			return 0, paramError(name, "is empty; give a number or leave it out")
		}
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, paramError(name, "%q is not a whole number of at least %d", v, lo)
	}
	return min(n, max), nil
}

func boolParam(q url.Values, name string) (bool, *apiError) {
	v := q.Get(name)
	if v == "" && !q.Has(name) {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, paramError(name, "%q is not true or false", v)
	}
	return b, nil
}

// recipient is one entry of GET /messages/batch/{batchID}/recipients.
type recipient struct {
	Index     int    `json:"index"`
	Receiver  string `json:"receiver,omitempty"`
	Room      string `json:"room,omitempty"`
	MessageID string `json:"messageID,omitempty"`
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
}

type recipientsPage struct {
	BatchID    string      `json:"batchID"`
	Status     string      `json:"status,omitempty"`
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
var recipientStatuses = map[string]bool{"pending": true, "sent": true, "failed": true, "canceled": true}

// handleRecipients lists recipients in para order. offset is a para
// index, so paging is stable while the batch runs: a page never skips or
// repeats a recipient, even with a status filter whose matches change.
func (s *Service) handleRecipients(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	q := r.URL.Query()
	if err := queryParams(q, "offset", "limit", "status"); err != nil {
		writeError(w, err)
		return
	}
	offset, aerr := intParam(q, "offset", 0, 0, int(^uint(0)>>1))
	if aerr == nil {
		var limit int
		limit, aerr = intParam(q, "limit", defaultRecipientsLimit, 1, maxRecipientsLimit)
		if aerr == nil {
			status := q.Get("status")
			if q.Has("status") && !recipientStatuses[status] {
				aerr = paramError("status", "%q is not one of pending, sent, failed, canceled", status)
			} else {
				page, err := s.recipients(r.Context(), p.AppID, id, offset, limit, status)
				switch {
				case errors.Is(err, store.ErrNotFound):
					aerr = errBatchNotFound(id)
				case err != nil:
					aerr = s.storeError(r.Context(), "list recipients", err)
				default:
					writeOK(w, page)
					return
				}
			}
		}
	}
	writeError(w, aerr)
}

func (s *Service) recipients(ctx context.Context, app, id string, offset, limit int, status string) (*recipientsPage, error) {
	b, err := s.cfg.Batches.GetBatch(ctx, app, id)
	if err != nil {
		return nil, err
	}
	page := &recipientsPage{BatchID: id, Status: status, Offset: offset, Limit: limit, Recipients: []recipient{}}
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
	if offset >= b.Count || b.Chunks == 0 {
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
		for i, rc := range c.Recipients {
			idx := c.Start + i
			if idx < offset {
				continue
			}
			e := recipient{Index: idx, Receiver: rc.Receiver, Room: rc.Room, Status: "pending"}
			if c.Done {
				o := c.Outcomes[i]
				e.Status, e.MessageID, e.Error = string(o.Status), o.MessageID, o.Error
				if o.Room != "" {
					e.Room = o.Room
				}
			}
			if status != "" && e.Status != status {
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

// previewMessage is one entry of a dry run's preview.
type previewMessage struct {
	Index    int             `json:"index"`
	Receiver string          `json:"receiver,omitempty"`
	Room     string          `json:"room,omitempty"`
	Message  string          `json:"message"`
	Extra    json.RawMessage `json:"extra,omitempty"`
}

type dryRunResult struct {
	DryRun  bool             `json:"dryRun"`
	Count   int              `json:"count"`
	Chunks  int              `json:"chunks"`
	Sender  string           `json:"sender"`
	SendAt  *time.Time       `json:"sendAt,omitempty"`
	Preview []previewMessage `json:"preview"`
}

const (
	defaultPreviewLimit = 3
	maxPreviewLimit     = 20
)

// preview renders the first n messages of a checked request without
// storing anything. A receiver's room is named only when the Directory
// can name it without creating it (store.DirectRoomNamer).
func (s *Service) preview(req *sendRequest, sender string, sendAt time.Time, n int) *dryRunResult {
	res := &dryRunResult{DryRun: true, Count: len(req.Paras), Sender: sender, Preview: []previewMessage{},
		Chunks: (len(req.Paras) + s.cfg.ChunkSize - 1) / s.cfg.ChunkSize}
	if !sendAt.IsZero() {
		res.SendAt = &sendAt
	}
	namer, _ := s.cfg.Directory.(store.DirectRoomNamer)
	text := render.Compile(req.Message)
	for i, p := range req.Paras[:min(n, len(req.Paras))] {
		pm := previewMessage{Index: i, Room: p.Room, Message: text.Render(p.Vars)}
		if p.Room == "" {
			pm.Receiver = p.Receiver
			if namer != nil {
				pm.Room = namer.DirectRoomID(sender, p.Receiver)
			}
		}
		if req.extra != nil {
			pm.Extra = req.extra.Render(p.Vars)
		}
		res.Preview = append(res.Preview, pm)
	}
	return res
}
