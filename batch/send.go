package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/chatbatch/chatbatch/render"
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
}

// sendResult is the result of an accepted POST /messages/batch.
type sendResult struct {
	BatchID string `json:"batchID"`
	Count   int    `json:"count"`
}

func (s *Service) handleSend(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := checkContentType(r); err != nil {
		writeError(w, err)
		return
	}
	body, aerr := readBody(w, r, s.cfg.MaxBodyBytes)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	req, aerr := decodeSend(body, s.cfg.MaxRecipients, s.extraFields)
	if aerr == nil {
		aerr = s.validate(req)
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	res, aerr := s.accept(r.Context(), p, req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeOK(w, res)
}

// accept checks a valid request against the directory, stores the batch
// and enqueues its chunks. Nothing is stored or enqueued unless every
// check passes; a returned result means the batch is durable.
func (s *Service) accept(ctx context.Context, p Principal, req *sendRequest) (*sendResult, *apiError) {
	sender := s.cfg.DefaultSender
	if req.Sender != "" {
		if !p.Admin {
			return nil, newError(http.StatusForbidden, CodeInsufficientPermission,
				"only admin API keys may set sender; omit it to send as %q", s.cfg.DefaultSender)
		}
		sender = req.Sender
	}
	if s.cfg.StrictVariables {
		if err := checkVariables(req); err != nil {
			return nil, err
		}
	}
	if err := s.checkRecipients(ctx, p.AppID, sender, req.Paras); err != nil {
		return nil, err
	}

	pl, err := json.Marshal(payload{
		Version: 1, Message: req.Message, MessageType: req.MessageType, Extra: req.Extra,
		Fields: req.fields, Push: req.Push, SkipTotalBadge: req.SkipTotalBadge,
	})
	if err != nil {
		s.log.Error("batch: encoding the payload failed", "err", err)
		return nil, errInternal
	}
	now := s.cfg.Now().UTC()
	b := &store.Batch{AppID: p.AppID, Sender: sender, Count: len(req.Paras), Payload: pl, CreatedAt: now}
	chunks := splitChunks(req.recipients(), s.cfg.ChunkSize, now)
	b.Chunks = len(chunks)
	// A batch ID collision is astronomically unlikely, but costs one retry.
	for attempt := 0; ; attempt++ {
		b.ID = newBatchID(now)
		for i := range chunks {
			chunks[i].AppID, chunks[i].BatchID = p.AppID, b.ID
		}
		err = s.cfg.Batches.CreateBatch(ctx, b, chunks)
		if !errors.Is(err, store.ErrConflict) || attempt == 2 {
			break
		}
	}
	if err != nil {
		return nil, s.storeError(ctx, "create batch", err)
	}
	s.log.Info("batch accepted", "app", p.AppID, "batch", b.ID, "recipients", b.Count, "chunks", b.Chunks, "push", req.Push)

	refs := make([]store.ChunkRef, len(chunks))
	for i, c := range chunks {
		refs[i] = c.ChunkRef
	}
	// The batch is durable: from here on, failures are the sweeper's to
	// repair, not the client's to retry. The enqueue must not outlive a
	// canceled request halfway, so it gets its own bounded context.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.EnqueueTimeout)
	defer cancel()
	if n, err := s.enqueue(ectx, refs, time.Time{}); err != nil {
		s.log.Warn("batch: enqueue failed after the batch was stored; the sweeper will enqueue the rest",
			"batch", b.ID, "queued", n, "chunks", len(refs), "err", err)
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
func (s *Service) checkRecipients(ctx context.Context, app, sender string, paras []para) *apiError {
	users := []string{sender}
	var rooms []string
	for _, p := range paras {
		if p.Room != "" {
			rooms = append(rooms, p.Room)
		} else {
			users = append(users, p.Receiver)
		}
	}
	missingUsers, err := s.cfg.Directory.MissingUsers(ctx, app, users)
	if err != nil {
		return s.storeError(ctx, "look up users", err)
	}
	var missingRooms []string
	if len(rooms) > 0 {
		if missingRooms, err = s.cfg.Directory.MissingRooms(ctx, app, rooms); err != nil {
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
	receivers := 0
	for i, p := range paras {
		switch {
		case p.Room != "" && noRoom[p.Room]:
			details = append(details, Detail{Index: index(i), Field: fmt.Sprintf("paras[%d].room", i), Value: p.Room, Reason: "no such room"})
		case p.Room == "" && noUser[p.Receiver]:
			receivers++
			details = append(details, Detail{Index: index(i), Field: fmt.Sprintf("paras[%d].receiver", i), Value: p.Receiver, Reason: "no such user"})
		}
	}
	roomsMissing := len(details) - receivers
	if senderMissing {
		roomsMissing--
	}
	if senderMissing || receivers > 0 {
		msg := fmt.Sprintf("%d receivers do not exist", receivers)
		if senderMissing {
			msg = fmt.Sprintf("the sender %q does not exist", sender)
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
func checkVariables(req *sendRequest) *apiError {
	msg := render.Compile(req.Message)
	var details []Detail
	total := 0
	for i, p := range req.Paras {
		missing := msg.Missing(p.Vars)
		if req.extra != nil {
			for _, v := range req.extra.Missing(p.Vars) {
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
			details = append(details, Detail{Index: index(i), Field: fmt.Sprintf("paras[%d]", i), Variables: vars})
		}
	}
	if total == 0 {
		return nil
	}
	return newError(http.StatusBadRequest, CodeMissingVariable,
		"%d recipients have no value for some template variables (first: paras[%d] lacks %v); nothing was sent",
		total, *details[0].Index, details[0].Variables).with(details...)
}
