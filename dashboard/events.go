package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The events endpoint: GET {mount}/batch-events[?batch=ID][&queue=true]
// streams, as Server-Sent Events,
//
//	event: batches  data: the list page (GET {BatchPath}?limit=N's result), whenever it changes
//	event: batch    data: batch ID's status (GET {BatchPath}/{ID}'s result), whenever it changes
//	event: queue    data: the queue's health (GET {BatchPath}/-/queue's result), whenever it changes
//	event: apierror data: {"status":…,"of":"list"|"batch"|"queue","error":{…}} when the API refuses a poll
//
// It polls the batch API in-process every Options.Interval with the
// credentials of the request (Options.Forward), so the browser sees only
// what its key or session may see. A first poll of the list or the batch
// the API refuses with 401 or 403 ends the request with the API's own
// answer, not a stream. The queue is for admin principals: a 403, or a
// 501 from a server without Redis, is reported once and the queue is not
// polled again (the list and the batch go on).

// pingEvery keeps proxies from closing an idle stream.
const pingEvery = 15 * time.Second

// writeWait bounds each write to the stream, so a client that stops
// reading is cut off even when the server has no WriteTimeout (and a
// server's WriteTimeout does not end a healthy stream).
const writeWait = 30 * time.Second

// answer is one in-process API response.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// recorder is a minimal http.ResponseWriter that keeps the answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// relay writes the API's answer as the browser's: its status, body and
// the headers that explain a refusal, never cached.
func (a *answer) relay(w http.ResponseWriter) {
	for _, k := range []string{"Content-Type", "WWW-Authenticate", "Retry-After"} {
		if v := a.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// call runs GET path?query on the API with the credentials of orig.
//
// The inner request's context ends with ctx but carries none of its
// values: they belong to the incoming request as the host's router saw
// it, and a router that finds its own state in a request takes it for a
// call from a parent router (chi keeps a *chi.Context under
// chi.RouteCtxKey; a chi Mux given a request with one routes the parent's
// remaining path, not this request's, and answered every poll with 404).
// Nothing the API needs is lost: the credentials travel as the forwarded
// headers (Options.Forward), not in the context.
func (h *Handler) call(ctx context.Context, orig *http.Request, path string, query url.Values) answer {
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	u := &url.URL{Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(inner, http.MethodGet, u.RequestURI(), nil)
	if err != nil {
		return answer{status: http.StatusInternalServerError}
	}
	req.RequestURI = ""
	req.RemoteAddr = orig.RemoteAddr
	req.Host = orig.Host
	req.TLS = orig.TLS
	req.Header.Set("Accept", "application/json")
	for _, name := range h.o.Forward {
		for _, v := range orig.Header.Values(name) {
			req.Header.Add(name, v)
		}
	}
	rec := &recorder{header: http.Header{}}
	h.o.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return answer{status: rec.status, header: rec.header, body: rec.body.Bytes()}
}

// result is the "result" of an OK envelope, compacted onto one line.
func result(body []byte) ([]byte, bool) {
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if json.Unmarshal(body, &env) != nil || len(env.Result) == 0 {
		return nil, false
	}
	var b bytes.Buffer
	if json.Compact(&b, env.Result) != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// apiError is the event of a refused poll.
func apiError(of string, a answer) []byte {
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(a.body, &env) != nil || len(env.Error) == 0 {
		msg := strings.TrimSpace(string(a.body))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		if msg == "" {
			msg = http.StatusText(a.status)
		}
		env.Error, _ = json.Marshal(map[string]any{"code": "HTTP_" + strconv.Itoa(a.status), "message": msg, "details": []any{}})
	}
	var b bytes.Buffer
	_ = json.Compact(&b, env.Error)
	out, _ := json.Marshal(map[string]any{"status": a.status, "of": of, "error": json.RawMessage(b.Bytes())})
	return out
}

// retryAfter is the wait a 429 or 503 asks for, at least def.
func retryAfter(a answer, def time.Duration) time.Duration {
	if a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable {
		return def
	}
	if s, err := strconv.Atoi(a.header.Get("Retry-After")); err == nil && s > 0 {
		return max(def, min(time.Duration(s)*time.Second, time.Minute))
	}
	return def
}

// poller remembers what the stream last sent.
type poller struct {
	h       *Handler
	r       *http.Request
	batchID string
	queue   bool              // poll the queue's health too
	queueAt time.Time         // when the queue was last polled
	last    map[string][]byte // by event name: the data last sent
	noList  bool              // the API cannot list (501): poll the batch only
}

// queueSuffix is the queue's health below BatchPath (batch.QueuePath).
const queueSuffix = "/-/queue"

// queueEvery is how often the queue is polled at most: its health is
// several calls of asynq's inspector.
const queueEvery = 2 * time.Second

// poll asks the API and returns the events to send and how long to wait
// before the next poll; fatal is set for an answer that ends the stream
// (401, 403).
func (p *poller) poll(ctx context.Context) (events []string, wait time.Duration, fatal *answer) {
	wait = p.h.o.Interval
	type target struct{ name, of, path string }
	targets := []target{}
	if !p.noList {
		targets = append(targets, target{"batches", "list", p.h.o.BatchPath})
	}
	if p.batchID != "" {
		targets = append(targets, target{"batch", "batch", p.h.o.BatchPath + "/" + url.PathEscape(p.batchID)})
	}
	if p.queue && time.Since(p.queueAt) >= max(queueEvery, p.h.o.Interval)-p.h.o.Interval/2 {
		p.queueAt = time.Now()
		targets = append(targets, target{"queue", "queue", p.h.o.BatchPath + queueSuffix})
	}
	for _, t := range targets {
		q := url.Values{}
		if t.of == "list" {
			q.Set("limit", strconv.Itoa(p.h.o.ListLimit))
		}
		a := p.h.call(ctx, p.r, t.path, q)
		if ctx.Err() != nil {
			return nil, wait, nil
		}
		name, data := t.name, []byte(nil)
		if a.status == http.StatusOK {
			var ok bool
			if data, ok = result(a.body); !ok {
				a.status = http.StatusBadGateway
			}
		}
		if a.status != http.StatusOK {
			if a.status == http.StatusUnauthorized || (a.status == http.StatusForbidden && t.of != "queue") {
				return events, wait, &a
			}
			if a.status == http.StatusNotImplemented && t.of == "list" {
				p.noList = true
			}
			if (a.status == http.StatusForbidden || a.status == http.StatusNotImplemented || a.status == http.StatusNotFound) && t.of == "queue" {
				// Not an admin, no Redis, or an API without the queue:
				// asking again answers the same.
				p.queue = false
			}
			name, data = "apierror", apiError(t.of, a)
			wait = retryAfter(a, wait)
		} else {
			delete(p.last, "apierror")
		}
		if !bytes.Equal(p.last[name], data) {
			p.last[name] = data
			events = append(events, "event: "+name+"\ndata: "+string(data)+"\n\n")
		}
	}
	return events, wait, nil
}

func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "batch" && k != "queue" {
			writeError(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("unknown query parameter %q: the events endpoint takes batch and queue only", k))
			return
		}
	}
	withQueue := false
	if q.Has("queue") {
		var err error
		if withQueue, err = strconv.ParseBool(q.Get("queue")); err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("queue: %q is not true or false", q.Get("queue")))
			return
		}
	}
	ctx := r.Context()
	p := &poller{h: h, r: r, batchID: q.Get("batch"), queue: withQueue, last: map[string][]byte{}}
	first, wait, fatal := p.poll(ctx)
	if fatal != nil {
		// Not signed in: the API's own answer, for the page to show.
		fatal.relay(w)
		return
	}
	rc := http.NewResponseController(w)
	extend := func() { _ = rc.SetWriteDeadline(time.Now().Add(writeWait)) }
	extend()
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	ready, _ := json.Marshal(map[string]any{"interval": h.o.Interval.Milliseconds(), "batch": p.batchID, "queue": withQueue})
	send := func(frames []string) bool {
		extend()
		for _, f := range frames {
			if _, err := io.WriteString(w, f); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !send(append([]string{"retry: 2000\nevent: ready\ndata: " + string(ready) + "\n\n"}, first...)) {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			if !send([]string{": ping\n\n"}) {
				return
			}
		case <-timer.C:
			events, wait, fatal := p.poll(ctx)
			if fatal != nil {
				events = append(events, "event: apierror\ndata: "+string(apiError("auth", *fatal))+"\n\n")
				send(events)
				return
			}
			if len(events) > 0 && !send(events) {
				return
			}
			timer.Reset(wait)
		}
	}
}

// writeError answers in the batch API's error envelope, so the page (and
// any client of the API) reads the dashboard's own errors the same way.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"RC": status, "RM": http.StatusText(status),
		"error": map[string]any{"code": code, "message": msg, "details": []any{}}})
}
