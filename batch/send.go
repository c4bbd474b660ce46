package batch

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatbatch/chatbatch/store"
)

// payload is what a batch stores besides its recipients: everything the
// processor needs to build the messages. Stores keep it opaque.
type payload struct {
	Version        int                        `json:"v"`
	Message        string                     `json:"message"`
	MessageType    string                     `json:"messageType"`
	Extra          json.RawMessage            `json:"extra,omitempty"`
	Fields         map[string]json.RawMessage `json:"fields,omitempty"`
	Push           bool                       `json:"push,omitempty"`
	SkipTotalBadge bool                       `json:"skipTotalBadge,omitempty"`
	// Declared are the names, beyond identifier names, that some para
	// declares and the message or extra use (sendRequest.usedDeclared);
	// every chunk compiles the templates with them.
	Declared []string `json:"declared,omitempty"`
	// RatePerMinute is the pace of a throttled batch; 0 when it is not.
	RatePerMinute int `json:"ratePerMinute,omitempty"`
}

// sendResult is the result of an accepted POST /messages/batch.
type sendResult struct {
	BatchID string `json:"batchID"`
	Count   int    `json:"count"`
}

// sendOptions are the query parameters of POST /messages/batch.
type sendOptions struct {
	dryRun       bool
	previewLimit int
}

func parseSendOptions(q url.Values) (sendOptions, *apiError) {
	var o sendOptions
	if err := queryParams(q, "dryRun", "previewLimit"); err != nil {
		return o, err
	}
	var err *apiError
	if o.dryRun, err = boolParam(q, "dryRun"); err != nil {
		return o, err
	}
	o.previewLimit, err = intParam(q, "previewLimit", defaultPreviewLimit, 0, maxPreviewLimit)
	return o, err
}

func (s *Service) handleSend(w http.ResponseWriter, r *http.Request, p Principal) {
	start := time.Now()
	ctx, sp := s.tel.span(r.Context(), "chatbatch.send", attrApp.String(p.AppID))
	status := http.StatusOK
	defer func() {
		sp.SetAttributes(attrStatus.Int(status))
		sp.End()
		s.tel.acceptDuration.Record(ctx, seconds(time.Since(start)), metric.WithAttributes(attrApp.String(p.AppID), attrStatus.Int(status)))
	}()
	opts, aerr := parseSendOptions(r.URL.Query())
	if aerr == nil {
		aerr = checkContentType(r)
	}
	var body []byte
	if aerr == nil {
		body, aerr = readBody(w, r, s.cfg.MaxBodyBytes)
	}
	// From here on the request waits only for the store and the queue:
	// bound that, so a database that does not answer gives a 503.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	// A dry run stores nothing, so it has nothing to make idempotent.
	var idem *idempotency
	if aerr == nil && len(r.Header.Values("Idempotency-Key")) > 0 && !opts.dryRun {
		var replay *sendResult
		idem, aerr, replay = s.claim(ctx, w, p, r.Header.Get("Idempotency-Key"), body)
		if replay != nil {
			writeOK(w, replay)
			return
		}
	}
	var req *sendRequest
	if aerr == nil {
		maxRecipients := s.cfg.MaxRecipients
		if p.MaxRecipients > 0 {
			maxRecipients = min(maxRecipients, p.MaxRecipients)
		}
		req, aerr = decodeSend(body, maxRecipients, s.extraFields)
	}
	if aerr == nil {
		sp.SetAttributes(attrCount.Int(len(req.Paras)), attrDryRun.Bool(opts.dryRun))
	}
	if aerr == nil {
		aerr = s.validate(ctx, req)
	}
	if aerr == nil && !opts.dryRun { // Config.RateLimit's RecipientsPerMinute
		aerr = s.limitRecipients(ctx, w, p, len(req.Paras))
	}
	var result any
	if aerr == nil {
		result, aerr = s.accept(ctx, w, p, req, opts, idem)
	}
	if aerr != nil {
		s.release(ctx, idem)
		status = aerr.status
		sp.SetAttributes(attrErrCode.String(aerr.code))
		if aerr.status >= 500 {
			sp.SetStatus(codes.Error, aerr.code)
		}
		writeError(w, aerr)
		return
	}
	writeOK(w, result)
}

// checked is a request that passed every check.
type checked struct {
	sender string
	sendAt time.Time // zero: now
	rate   int       // recipients a minute; 0: not throttled
}

// check runs every check a request must pass before anything is stored.
func (s *Service) check(ctx context.Context, p Principal, req *sendRequest) (*checked, *apiError) {
	c := &checked{sender: s.cfg.DefaultSender}
	if p.ownerOnly() {
		c.sender = p.UserID // a signed-in user sends as itself
	}
	if req.Sender != "" {
		if !p.Admin {
			return nil, newError(http.StatusForbidden, CodeInsufficientPermission,
				"only admin principals may set sender; omit it to send as %q", c.sender)
		}
		c.sender = req.Sender
	}
	now := s.cfg.Now().UTC()
	if req.SendAt.After(now) {
		if req.SendAt.Sub(now) > s.cfg.MaxScheduleAhead {
			return nil, bodyError("sendAt", "%s is more than %v ahead; the limit is Config.MaxScheduleAhead",
				req.SendAt.Format(time.RFC3339), s.cfg.MaxScheduleAhead)
		}
		c.sendAt = req.SendAt // a time in the past means now
	}
	if aerr := s.checkRate(req, c, now); aerr != nil {
		return nil, aerr
	}
	if s.cfg.StrictVariables || req.StrictVariables {
		if err := checkVariables(req); err != nil {
			return nil, err
		}
	}
	if err := s.checkRecipients(ctx, p.AppID, c.sender, req.Paras); err != nil {
		return nil, err
	}
	return c, nil
}

// checkRate sets c.rate, the pace of the batch: the request's
// ratePerMinute, else Config.DefaultRatePerMinute, else
// Config.MaxRatePerMinute; more than MaxRatePerMinute is refused, and so
// is a pace that would end the batch past Config.MaxScheduleAhead.
func (s *Service) checkRate(req *sendRequest, c *checked, now time.Time) *apiError {
	c.rate = s.paceOf(req)
	if limit := s.cfg.MaxRatePerMinute; limit > 0 && c.rate > limit {
		return bodyError("ratePerMinute", "%d is above this server's maximum of %d recipients a minute", c.rate, limit)
	}
	if c.rate == 0 {
		return nil
	}
	start := now
	if !c.sendAt.IsZero() {
		start = c.sendAt
	}
	if end := start.Add(pacedDuration(len(req.Paras), c.rate)); end.Sub(now) > s.cfg.MaxScheduleAhead {
		return bodyError("ratePerMinute", "at %d recipients a minute the %d recipients would take until %s, more than %v ahead (Config.MaxScheduleAhead)",
			c.rate, len(req.Paras), end.Format(time.RFC3339), s.cfg.MaxScheduleAhead)
	}
	return nil
}

// paceOf is the pace of req's batch in recipients a minute: its
// ratePerMinute, else Config.DefaultRatePerMinute, else
// Config.MaxRatePerMinute; 0 when it is not throttled.
func (s *Service) paceOf(req *sendRequest) int {
	return cmp.Or(req.RatePerMinute, s.cfg.DefaultRatePerMinute, s.cfg.MaxRatePerMinute)
}

// pacedDuration is how long n recipients take at rate a minute.
func pacedDuration(n, rate int) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Minute))
}

// pace schedules chunks of at most rate recipients so that no more than
// rate are due in any minute: chunk i is due start + i × (its size /
// rate) minutes.
func pace(chunks []store.Chunk, start time.Time, rate int) {
	at := start
	for i := range chunks {
		chunks[i].NotBefore = at
		at = at.Add(pacedDuration(len(chunks[i].Recipients), rate))
	}
}

// accept checks a valid request against the directory, stores the batch
// and enqueues its chunks. Nothing is stored or enqueued unless every
// check passes; a returned result means the batch is durable. A dry run
// stops after the checks and returns a preview.
func (s *Service) accept(ctx context.Context, w http.ResponseWriter, p Principal, req *sendRequest, opts sendOptions, idem *idempotency) (any, *apiError) {
	due := 0
	if !opts.dryRun {
		// Before the look-ups: under overload a refusal costs least.
		due = s.dueNow(req, s.cfg.Now())
		if aerr := s.adm.admit(ctx, p.AppID, due); aerr != nil {
			return nil, aerr
		}
	}
	c, aerr := s.check(ctx, p, req)
	if aerr != nil {
		return nil, aerr
	}
	if opts.dryRun {
		return s.preview(req, c, opts.previewLimit), nil
	}

	pl, err := json.Marshal(payload{
		Version: 1, Message: req.Message, MessageType: req.MessageType, Extra: req.Extra,
		Fields: req.fields, Push: req.Push, SkipTotalBadge: req.SkipTotalBadge, Declared: req.usedDeclared(),
		RatePerMinute: c.rate,
	})
	if err != nil {
		s.log.ErrorContext(ctx, "batch: encoding the payload failed", "err", err)
		return nil, errInternal
	}
	now := s.cfg.Now().UTC()
	b := &store.Batch{AppID: p.AppID, Sender: c.sender, CreatedBy: p.creator(), Count: len(req.Paras), Payload: pl, CreatedAt: now, SendAt: c.sendAt, RatePerMinute: c.rate}
	if idem != nil {
		b.IdempotencyKey = idem.key
	}
	notBefore := now
	if !c.sendAt.IsZero() {
		notBefore = c.sendAt
	}
	size := s.cfg.ChunkSize
	if c.rate > 0 {
		// A throttled batch goes out a chunk at a time, at most a minute's
		// worth in each.
		size = min(size, c.rate)
	}
	chunks := splitChunks(req.recipients(), size, notBefore)
	if c.rate > 0 {
		pace(chunks, notBefore, c.rate)
	}
	b.Chunks = len(chunks)
	// A batch ID collision is astronomically unlikely, but costs one retry.
	for attempt := 0; ; attempt++ {
		b.ID = newBatchID(now)
		for i := range chunks {
			chunks[i].AppID, chunks[i].BatchID = p.AppID, b.ID
		}
		_, err = traced(ctx, s.tel, "CreateBatch", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, s.cfg.Batches.CreateBatch(ctx, b, chunks)
		})
		if !errors.Is(err, store.ErrConflict) || attempt == 2 {
			break
		}
		if idem != nil {
			if res := s.replayAfterConflict(ctx, w, idem); res != nil {
				return res, nil
			}
		}
	}
	if err != nil {
		return nil, s.storeError(ctx, "create batch", err)
	}
	s.adm.record(p.AppID, due)
	trace.SpanFromContext(ctx).SetAttributes(attrBatch.String(b.ID), attrChunks.Int(b.Chunks))
	s.tel.batchesAccepted.Add(ctx, 1, metric.WithAttributes(attrApp.String(p.AppID), attrScheduled.Bool(!c.sendAt.IsZero())))
	log := s.log.With("app", p.AppID, "batch", b.ID)
	if c.sendAt.IsZero() {
		log.InfoContext(ctx, "batch accepted", "recipients", b.Count, "chunks", b.Chunks, "push", req.Push)
	} else {
		log.InfoContext(ctx, "batch scheduled", "recipients", b.Count, "chunks", b.Chunks, "push", req.Push, "send_at", c.sendAt)
	}

	// The batch is durable: from here on, failures are the sweeper's to
	// repair, not the client's to retry. The enqueue must not outlive a
	// canceled request halfway, so it gets its own bounded context.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.EnqueueTimeout)
	defer cancel()
	if n, err := s.enqueue(ectx, chunks); err != nil {
		log.WarnContext(ctx, "batch: enqueue failed after the batch was stored; the sweeper will enqueue the rest",
			"queued", n, "chunks", len(chunks), "err", err)
	}
	return &sendResult{BatchID: b.ID, Count: b.Count}, nil
}

// splitChunks cuts recipients into chunks of at most size.
func splitChunks(rs []store.Recipient, size int, notBefore time.Time) []store.Chunk {
	var chunks []store.Chunk
	for start := 0; start < len(rs); start += size {
		end := min(start+size, len(rs))
		chunks = append(chunks, store.Chunk{
			ChunkRef:   store.ChunkRef{No: len(chunks)},
			Start:      start,
			Recipients: rs[start:end:end],
			NotBefore:  notBefore,
		})
	}
	return chunks
}

// checkRecipients looks up every receiver (of paras without a room), every
// room and the sender in bulk, and reports all that do not exist.
func (s *Service) checkRecipients(ctx context.Context, app, sender string, paras []store.Recipient) *apiError {
	users := []string{sender}
	var rooms []string
	for _, p := range paras {
		if p.Room != "" {
			rooms = append(rooms, p.Room)
		} else {
			users = append(users, p.Receiver)
		}
	}
	missingUsers, err := traced(ctx, s.tel, "MissingUsers", func(ctx context.Context) ([]string, error) {
		return s.cfg.Directory.MissingUsers(ctx, app, users)
	})
	if err != nil {
		return s.storeError(ctx, "look up users", err)
	}
	var missingRooms []string
	if len(rooms) > 0 {
		if missingRooms, err = traced(ctx, s.tel, "MissingRooms", func(ctx context.Context) ([]string, error) {
			return s.cfg.Directory.MissingRooms(ctx, app, rooms)
		}); err != nil {
			return s.storeError(ctx, "look up rooms", err)
		}
	}
	if len(missingUsers) == 0 && len(missingRooms) == 0 {
		return nil
	}
	noUser := setOf(missingUsers)
	noRoom := setOf(missingRooms)
	var details []Detail
	senderMissing := noUser[sender]
	if senderMissing {
		details = append(details, Detail{Field: "sender", Value: sender, Reason: "no such user"})
	}
	receivers, roomsMissing := 0, 0
	for i, p := range paras {
		switch {
		case p.Room != "" && noRoom[p.Room]:
			roomsMissing++
			details = append(details, Detail{Index: index(i), Field: fmt.Sprintf("paras[%d].room", i), Value: p.Room, Reason: "no such room"})
		case p.Room == "" && noUser[p.Receiver]:
			receivers++
			details = append(details, Detail{Index: index(i), Field: fmt.Sprintf("paras[%d].receiver", i), Value: p.Receiver, Reason: "no such user"})
		}
	}
	if senderMissing || receivers > 0 {
		msg := fmt.Sprintf("%d receivers do not exist", receivers)
		if senderMissing {
			msg = fmt.Sprintf("the sender %q does not exist", sender)
			if sender == s.cfg.DefaultSender {
				// A fresh directory's first batch lands here: say what to do.
				msg += " (it is the default sender, Config.DefaultSender, used when a request names none: create that user in the directory, or name a sender that exists)"
			}
			if receivers > 0 {
				msg += fmt.Sprintf(" and %d receivers do not exist", receivers)
			}
		}
		if roomsMissing > 0 {
			msg += fmt.Sprintf(", and %d rooms do not exist", roomsMissing)
		}
		return newError(http.StatusNotFound, CodeClientNotFound, "%s; see details", msg).with(details...)
	}
	return newError(http.StatusNotFound, CodeRoomNotFound, "%d rooms do not exist; see details", roomsMissing).with(details...)
}

func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// maxMissingVariableDetails bounds the recipients a MISSING_VARIABLE
// error names.
const maxMissingVariableDetails = 20

// checkVariables reports recipients that lack a value for a variable used
// in the message or in extra.
// who names the recipient of a detail: "room R" or "receiver U".
func who(d Detail) string {
	if d.Room != "" {
		return fmt.Sprintf("room %q", d.Room)
	}
	return fmt.Sprintf("receiver %q", d.Receiver)
}

func checkVariables(req *sendRequest) *apiError {
	msg, extra := req.templates()
	var details []Detail
	total := 0
	for i, p := range req.Paras {
		missing := msg.Missing(p.Vars)
		if extra != nil {
			for _, v := range extra.Missing(p.Vars) {
				if !slices.Contains(missing, v) {
					missing = append(missing, v)
				}
			}
		}
		if len(missing) == 0 {
			continue
		}
		total++
		if len(details) < maxMissingVariableDetails {
			vars := make([]string, len(missing))
			for j, v := range missing {
				vars[j] = "$" + v + "$"
			}
			d := Detail{Index: index(i), Field: fmt.Sprintf("paras[%d]", i), Variables: vars, Room: p.Room}
			if p.Room == "" {
				d.Receiver = p.Receiver
			}
			details = append(details, d)
		}
	}
	if total == 0 {
		return nil
	}
	return newError(http.StatusBadRequest, CodeMissingVariable,
		"%d recipients have no value for some template variables (first: paras[%d], %s, lacks %v); nothing was sent",
		total, *details[0].Index, who(details[0]), details[0].Variables).with(details...)
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
	DryRun bool       `json:"dryRun"`
	Count  int        `json:"count"`
	Chunks int        `json:"chunks"`
	Sender string     `json:"sender"`
	SendAt *time.Time `json:"sendAt,omitempty"`
	// RatePerMinute and EstimatedFinishAt describe a throttled batch.
	RatePerMinute     int              `json:"ratePerMinute,omitempty"`
	EstimatedFinishAt *time.Time       `json:"estimatedFinishAt,omitempty"`
	Preview           []previewMessage `json:"preview"`
}

const (
	defaultPreviewLimit = 3
	maxPreviewLimit     = 20
)

// preview renders the first n messages of a checked request without
// storing anything. A receiver's room is named only when the Directory
// can name it without creating it (store.DirectRoomNamer).
func (s *Service) preview(req *sendRequest, c *checked, n int) *dryRunResult {
	sender, sendAt := c.sender, c.sendAt
	size := s.cfg.ChunkSize
	if c.rate > 0 {
		size = min(size, c.rate)
	}
	res := &dryRunResult{DryRun: true, Count: len(req.Paras), Sender: sender, Preview: []previewMessage{},
		Chunks: (len(req.Paras) + size - 1) / size}
	if !sendAt.IsZero() {
		res.SendAt = &sendAt
	}
	if c.rate > 0 {
		start := cmp.Or(sendAt, s.cfg.Now().UTC())
		end := start.Add(pacedDuration(len(req.Paras), c.rate))
		res.RatePerMinute, res.EstimatedFinishAt = c.rate, &end
	}
	namer := s.opt.namer
	text, extra := req.templates()
	for i, p := range req.Paras[:min(n, len(req.Paras))] {
		pm := previewMessage{Index: i, Room: p.Room, Message: text.Render(p.Vars)}
		if p.Room == "" {
			pm.Receiver = p.Receiver
			if namer != nil {
				pm.Room = namer.DirectRoomID(sender, p.Receiver)
			}
		}
		if extra != nil {
			pm.Extra = extra.Render(p.Vars)
		}
		res.Preview = append(res.Preview, pm)
	}
	return res
}

// newBatchID returns "batch-YYYYMMDD-" and 10 random lower-case base32
// characters (50 bits from crypto/rand).
func newBatchID(now time.Time) string {
	return "batch-" + now.UTC().Format("20060102") + "-" + strings.ToLower(rand.Text()[:10])
}
