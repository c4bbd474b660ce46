package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/chatbatch/chatbatch/store"
)

// Reads: the host reports that users read messages (its read receipts),
// through MarkRead or POST BasePath/-/reads; chatbatch records the first
// read of each recipient and reports, per batch, how many recipients
// read their message (status and list: read, readRate) and when each did
// (recipients: readAt, ?read=).
//
// A message ID is "<batchID>-<para index>", so a read maps back to its
// batch and recipient without a look-up table. What counts:
//
//   - a message of a one-on-one para: a read by its receiver;
//   - a message to a room: the first read by any user other than the
//     sender (the host reports reads of members);
//   - never a read by the batch's sender, of a recipient whose message
//     is not sent (failed, canceled, recalled: a read after a recall does
//     not count; one before it stays counted), or of an ID that is no
//     chatbatch message (ignored, never an error).
//
// Recording costs one look-up of each chunk the reads fall in (its
// recipients and outcomes) and one store call (RecordReads: a count per
// chunk, never a write of the batch's row); the batch's sender and chunk
// size, which never change, are cached.

// maxReadIDs is the most message IDs one POST BasePath/-/reads takes.
const maxReadIDs = 1000

// readsPath is the path segment of the reads endpoint below QueuePath's
// "-": no batch ID is "-".
const readsPath = "reads"

// MarkRead records that user userID of app read the messages
// messageIDs, as the host's read receipts report it, and returns how
// many recipients it recorded a first read for. IDs that are not
// chatbatch messages, reads that do not count (see above), repeats and
// reads of recipients read before are ignored, never an error; an error
// is the store's (retry the call: it is idempotent) or an empty userID.
// Call it from the host's own read-receipt path, with as many IDs at a
// time as it has; MarkReads takes the reads of many users at once.
func (s *Service) MarkRead(ctx context.Context, app, userID string, messageIDs ...string) (int, error) {
	if userID == "" {
		return 0, errors.New("batch: MarkRead: userID is empty")
	}
	reads := make([]ReadReceipt, len(messageIDs))
	for i, id := range messageIDs {
		reads[i] = ReadReceipt{UserID: userID, MessageID: id}
	}
	return s.MarkReads(ctx, app, reads)
}

// ReadReceipt is one read the host saw: a user read a message.
type ReadReceipt struct {
	// UserID is the user who read the message.
	UserID string
	// MessageID is the message's ID (a chatbatch message's is
	// "<batchID>-<para index>"; any other is ignored).
	MessageID string
	// At is when the user read it; zero means now.
	At time.Time
}

// MarkReads is MarkRead for the reads of many users at once (a host
// that buffers its read receipts and flushes them now and then): it
// records the first read of each recipient among reads and returns how
// many it recorded. A call costs one look-up per chunk the reads fall in
// (cached per batch: its sender and chunk size) and one store call, so
// large calls are cheap per read; reads with an empty UserID are
// ignored. reads is the caller's; MarkReads does not keep it.
func (s *Service) MarkReads(ctx context.Context, app string, reads []ReadReceipt) (int, error) {
	if app == "" || len(reads) == 0 {
		return 0, nil
	}
	type ref struct {
		idx  int
		user string
		id   string
		at   time.Time
	}
	byBatch := map[string][]ref{}
	var order []string
	now := s.cfg.Now().UTC()
	for _, r := range reads {
		batchID, idx, ok := parseMessageID(r.MessageID)
		if !ok || r.UserID == "" {
			continue
		}
		if byBatch[batchID] == nil {
			order = append(order, batchID)
		}
		at := now
		if !r.At.IsZero() {
			at = r.At.UTC()
		}
		byBatch[batchID] = append(byBatch[batchID], ref{idx, r.UserID, r.MessageID, at})
	}
	var out []store.Read
	for _, batchID := range order {
		info, err := s.readInfo(ctx, app, batchID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("batch: MarkReads: %w", err)
		}
		refs := byBatch[batchID]
		slices.SortStableFunc(refs, func(a, b ref) int { return a.idx - b.idx })
		var c *store.Chunk
		for _, r := range refs {
			if r.idx >= info.count || r.user == info.sender {
				continue // past the batch, or the sender reading its own
			}
			no := r.idx / info.size
			if c == nil || c.No != no {
				err := s.storeCall(ctx, "LoadChunk", func(ctx context.Context) (err error) {
					c, err = s.cfg.Batches.LoadChunk(ctx, store.ChunkRef{AppID: app, BatchID: batchID, No: no})
					return err
				})
				if errors.Is(err, store.ErrNotFound) {
					c = nil
					continue
				}
				if err != nil {
					return 0, fmt.Errorf("batch: MarkReads: %w", err)
				}
			}
			i := r.idx - c.Start
			if i < 0 || i >= len(c.Recipients) || len(c.Outcomes) != len(c.Recipients) {
				continue // not processed yet
			}
			o, rc := c.Outcomes[i], c.Recipients[i]
			if o.Status != store.OutcomeSent || o.MessageID != r.id || (rc.Room == "" && rc.Receiver != r.user) {
				continue
			}
			out = append(out, store.Read{BatchID: batchID, Chunk: no, Index: r.idx, At: r.at})
		}
	}
	if len(out) == 0 {
		return 0, nil
	}
	n, err := bounded(ctx, s, "RecordReads", func(ctx context.Context) (int, error) {
		return s.cfg.Batches.RecordReads(ctx, &store.RecordReadsParams{AppID: app, Reads: out})
	})
	if err != nil {
		return 0, fmt.Errorf("batch: MarkReads: %w", err)
	}
	if n > 0 {
		s.tel.reads.Add(ctx, int64(n), metric.WithAttributes(attrApp.String(app)))
	}
	return n, nil
}

// parseMessageID splits a chatbatch message ID, "<batchID>-<para
// index>", with the batch ID as newBatchID makes them.
func parseMessageID(id string) (batchID string, idx int, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 || !strings.HasPrefix(id, "batch-") || !plausibleID(id) {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != id[i+1:] {
		return "", 0, false
	}
	return id[:i], n, true
}

// readInfo is what MarkRead needs of a batch that never changes: its
// sender, its size and its chunks' size (all but the last are as long
// as chunk 0).
type readInfo struct {
	sender      string
	count, size int
}

// readCache keeps readInfo by app and batch ID, up to readCacheSize
// batches (then it starts over): reads arrive for the batches of the
// last days, over and over.
type readCache struct {
	mu sync.Mutex
	m  map[[2]string]readInfo
}

const readCacheSize = 4096

func (s *Service) readInfo(ctx context.Context, app, batchID string) (readInfo, error) {
	k := [2]string{app, batchID}
	s.reads.mu.Lock()
	info, ok := s.reads.m[k]
	s.reads.mu.Unlock()
	if ok {
		return info, nil
	}
	var b *store.Batch
	err := s.storeCall(ctx, "GetBatch", func(ctx context.Context) (err error) {
		b, err = s.cfg.Batches.GetBatch(ctx, app, batchID)
		return err
	})
	if err != nil {
		return readInfo{}, err
	}
	if b.Chunks == 0 {
		return readInfo{}, store.ErrNotFound
	}
	var c *store.Chunk
	err = s.storeCall(ctx, "LoadChunk", func(ctx context.Context) (err error) {
		c, err = s.cfg.Batches.LoadChunk(ctx, store.ChunkRef{AppID: app, BatchID: batchID})
		return err
	})
	if err != nil {
		return readInfo{}, err
	}
	info = readInfo{sender: b.Sender, count: b.Count, size: max(len(c.Recipients), 1)}
	s.reads.mu.Lock()
	if s.reads.m == nil || len(s.reads.m) >= readCacheSize {
		s.reads.m = map[[2]string]readInfo{}
	}
	s.reads.m[k] = info
	s.reads.mu.Unlock()
	return info, nil
}

// readsRequest is the body of POST BasePath/-/reads.
type readsRequest struct {
	UserID     string   `json:"userID"`
	MessageIDs []string `json:"messageIDs"`
}

// readsResult is its answer.
type readsResult struct {
	// Recorded is how many recipients got their first read.
	Recorded int `json:"recorded"`
}

// handleReads serves POST BasePath/-/reads: MarkRead for hosts that
// report reads over HTTP. A user principal reports its own reads
// (userID absent or its own); an operator names the user.
func (s *Service) handleReads(w http.ResponseWriter, r *http.Request, p Principal) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := checkContentType(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "the body is larger than %d bytes", s.cfg.MaxBodyBytes))
			return
		}
		writeError(w, newError(http.StatusBadRequest, CodeInvalidBody, "the body could not be read"))
		return
	}
	var req readsRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		writeError(w, newError(http.StatusBadRequest, CodeInvalidBody, "the body is not a JSON object {\"userID\": …, \"messageIDs\": […]}"))
		return
	}
	switch {
	case p.ownerOnly() && req.UserID != "" && req.UserID != p.UserID:
		writeError(w, newError(http.StatusForbidden, CodeInsufficientPermission, "a signed-in user reports only its own reads; leave userID out"))
		return
	case p.ownerOnly():
		req.UserID = p.UserID
	case req.UserID == "":
		writeError(w, newError(http.StatusBadRequest, CodeMissingParameter, "userID is required: the user who read the messages").with(Detail{Field: "userID"}))
		return
	}
	if len(req.MessageIDs) > maxReadIDs {
		writeError(w, newError(http.StatusBadRequest, CodeInvalidParameter, "messageIDs has %d IDs; at most %d a request", len(req.MessageIDs), maxReadIDs).
			with(Detail{Field: "messageIDs", Reason: "too many"}))
		return
	}
	n, err := s.MarkRead(r.Context(), p.AppID, req.UserID, req.MessageIDs...)
	if err != nil {
		writeError(w, s.storeError(r.Context(), "mark read", err))
		return
	}
	writeOK(w, readsResult{Recorded: n})
}

// readRate is read ÷ delivered (sent + recalled: a recall does not undo
// a read), rounded to four places; 0 when nothing was delivered.
func readRate(read int, b *store.Batch) float64 {
	delivered := b.Sent + b.Recalled
	if delivered == 0 {
		return 0
	}
	return math.Round(float64(read)/float64(delivered)*1e4) / 1e4
}
