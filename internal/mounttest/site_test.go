package mounttest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// site is one host's router on a real HTTP server: a Service over
// memstore whose tasks are recorded, and processed when the test says.
type site struct {
	host
	env *bt.Env
	srv *httptest.Server

	mu        sync.Mutex
	processed int // tasks run through the Processor so far
}

func newSite(t *testing.T, h host, mutate func(*batch.Config)) *site {
	t.Helper()
	env := bt.NewEnv(t, func(c *batch.Config) {
		c.BasePath = h.basePath
		if mutate != nil {
			mutate(c)
		}
	})
	handler, err := h.mount(env.Svc)
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &site{host: h, env: env, srv: srv}
}

// api is the URL of the batch API, dash the dashboard's mount (no
// trailing slash), as the browser sees them.
func (s *site) api() string  { return s.srv.URL + s.prefix + "/messages/batch" }
func (s *site) dash() string { return s.srv.URL + s.prefix + "/admin/batches" }

// process runs up to n of the recorded tasks not run yet (n < 0: all)
// through the Processor, as a worker would, and returns how many it ran.
func (s *site) process(t *testing.T, n int) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	tasks := s.env.Enq.All()[s.processed:]
	if n >= 0 && n < len(tasks) {
		tasks = tasks[:n]
	}
	for _, q := range tasks {
		if err := s.env.Svc.Processor().ProcessTask(context.Background(), q.Task); err != nil {
			t.Fatalf("processing task %s: %v", q.ID, err)
		}
	}
	s.processed += len(tasks)
	return len(tasks)
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// call sends a request with the admin key (unless key is "none") and
// decodes the API's envelope.
func call(t *testing.T, method, url, key, body string) *bt.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	bt.Must(t, err)
	if key != "none" {
		req.Header.Set("IM-API-KEY", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", bt.JSONContentType)
	}
	res, err := noRedirects.Do(req)
	bt.Must(t, err)
	defer res.Body.Close()
	return bt.DecodeResponse(t, res)
}

// fetch sends a request without credentials (redirects not followed)
// and returns the answer and its body; an event stream's body is not
// read (it does not end).
func fetch(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	bt.Must(t, err)
	res, err := noRedirects.Do(req)
	bt.Must(t, err)
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		return res, ""
	}
	b, err := io.ReadAll(res.Body)
	bt.Must(t, err)
	return res, string(b)
}

func decode[T any](t *testing.T, r *bt.Response) T {
	t.Helper()
	var v T
	if r.Status != http.StatusOK {
		t.Fatalf("want 200, got %d: %s", r.Status, r.Raw)
	}
	bt.Must(t, json.Unmarshal(r.Result, &v))
	return v
}

// stream reads the dashboard's Server-Sent Events.
type stream struct {
	t      *testing.T
	events chan [2]string // name, data
}

// openEvents opens the dashboard's events endpoint with the admin key and
// checks that it is a stream.
func openEvents(t *testing.T, url string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	bt.Must(t, err)
	req.Header.Set("IM-API-KEY", bt.AdminKey)
	res, err := http.DefaultClient.Do(req)
	bt.Must(t, err)
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s = %d %s: %s", url, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	s := &stream{t: t, events: make(chan [2]string, 64)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		name := ""
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				s.events <- [2]string{name, v}
			}
		}
	}()
	return s
}

// next returns the data of the next event named name, skipping others;
// an apierror event (the API refused the dashboard's in-process call)
// fails the test.
func (s *stream) next(name string) json.RawMessage {
	s.t.Helper()
	deadline := time.After(bt.WaitLimit)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("the stream ended before a %q event", name)
			}
			if ev[0] == "apierror" {
				s.t.Fatalf("the stream carried an apierror, not %q: %s", name, ev[1])
			}
			if ev[0] == name {
				return json.RawMessage(ev[1])
			}
		case <-deadline:
			s.t.Fatalf("no %q event within %v", name, bt.WaitLimit)
		}
	}
}

type batchList struct {
	Batches []bt.BatchStatus `json:"batches"`
}

// find returns the batch id of the list, or fails.
func (l batchList) find(t *testing.T, id string) bt.BatchStatus {
	t.Helper()
	for _, b := range l.Batches {
		if b.BatchID == id {
			return b
		}
	}
	t.Fatalf("the list lacks batch %s: %+v", id, l.Batches)
	return bt.BatchStatus{}
}
