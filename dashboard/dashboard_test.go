package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/dashboard"
)

// fakeAPI answers GET /messages/batch and /messages/batch/{id} for the
// key "k", from a status the test moves along, and records the
// credentials it was called with.
type fakeAPI struct {
	mu      sync.Mutex
	sent    int
	status  int    // answer this instead, when set
	retry   string // Retry-After with status
	calls   atomic.Int64
	keys    []string
	cookies []string
	notList bool
	queue   int // answer the queue's health with this status (0: 200)
	queues  atomic.Int64
}

func (f *fakeAPI) setSent(n int) { f.mu.Lock(); f.sent = n; f.mu.Unlock() }

func (f *fakeAPI) batch() map[string]any {
	status := "running"
	if f.sent == 10 {
		status = "completed"
	}
	return map[string]any{"batchID": "batch-1", "status": status, "count": 10, "sent": f.sent, "failed": 0,
		"pending": 10 - f.sent, "canceled": 0, "pushFailed": 0, "createdAt": "2026-11-25T18:40:00Z"}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, r.Header.Get("IM-API-KEY"))
	f.cookies = append(f.cookies, r.Header.Get("Cookie"))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fail := func(status int, code, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"RC": status, "RM": http.StatusText(status), "error": map[string]any{"code": code, "message": msg, "details": []any{}}})
	}
	if r.Header.Get("IM-API-KEY") != "k" && r.Header.Get("Cookie") != "session=s" {
		fail(401, "INVALID_API_KEY", "the IM-API-KEY header is missing")
		return
	}
	if f.status != 0 {
		if f.retry != "" {
			w.Header().Set("Retry-After", f.retry)
		}
		fail(f.status, "RATE_LIMIT_EXCEEDED", "too many requests")
		return
	}
	switch r.URL.Path {
	case "/api/messages/batch":
		if f.notList {
			fail(501, "NOT_SUPPORTED", "the store cannot list batches")
			return
		}
		if r.URL.Query().Get("limit") != "20" {
			fail(400, "INVALID_PARAMETER", "limit")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"RC": 0, "RM": "OK", "result": map[string]any{"batches": []any{f.batch()}}})
	case "/api/messages/batch/-/queue":
		f.queues.Add(1)
		if f.queue != 0 {
			fail(f.queue, "INSUFFICIENT_PERMISSIONS", "only admin principals may see the queue")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"RC": 0, "RM": "OK", "result": map[string]any{"queue": "chatbatch", "pending": f.sent, "archivedTasks": []any{}}})
	case "/api/messages/batch/batch-1":
		json.NewEncoder(w).Encode(map[string]any{"RC": 0, "RM": "OK", "result": f.batch()})
	case "/api/messages/batch/nope":
		fail(404, "BATCH_NOT_FOUND", "no batch nope")
	default:
		fail(404, "NOT_FOUND", "no such endpoint")
	}
}

func newDashboard(t *testing.T, api http.Handler, o dashboard.Options) *httptest.Server {
	t.Helper()
	o.API = api
	if o.BatchPath == "" {
		o.BatchPath = "/api/messages/batch"
	}
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	d, err := dashboard.New(o)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/batches/", http.StripPrefix("/admin/batches", d))
	mux.Handle("/admin/batches", http.StripPrefix("/admin/batches", d))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, u string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestAssets(t *testing.T) {
	srv := newDashboard(t, &fakeAPI{}, dashboard.Options{DemoKey: "demo-<key>", Live: &dashboard.Live{Base: "/host"}})
	res, page := get(t, srv.URL+"/admin/batches/", nil)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	csp := res.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", res.Header)
	}
	for _, want := range []string{
		`data-batch-path="/api/messages/batch"`, `data-live-base="/host"`, `data-live-limit="200"`,
		`value="demo-&lt;key&gt;"`, // escaped
		`src="assets/app.js"`, `href="assets/style.css"`, "Hi $name$,您的訂單 $orderId$ 已出貨!", `id="live"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page has an inline script or an external URL")
	}
	for path, ctype := range map[string]string{"/assets/app.js": "text/javascript", "/assets/style.css": "text/css"} {
		res, body := get(t, srv.URL+"/admin/batches"+path, nil)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(body) < 1000 {
			t.Errorf("GET %s = %d %s, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("%s loads something from another origin", path)
		}
	}
	for _, path := range []string{"/assets/index.html", "/assets/", "/index.htm", "/web/app.js", "/assets/dashboard.go", "/assets/web/app.js"} {
		if res, _ := get(t, srv.URL+"/admin/batches"+path, nil); res.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", path, res.StatusCode)
		}
	}
	if res, _ := get(t, srv.URL+"/admin/batches", nil); res.StatusCode != 301 || res.Header.Get("Location") != "/admin/batches/" {
		t.Errorf("GET /admin/batches = %d %q, want a redirect to /admin/batches/", res.StatusCode, res.Header.Get("Location"))
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/admin/batches/", nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 405 {
		t.Errorf("POST / = %v %v", res, err)
	}

	// Session authentication: no key field, no key in the page.
	srv = newDashboard(t, &fakeAPI{}, dashboard.Options{SessionAuth: true})
	_, page = get(t, srv.URL+"/admin/batches/", nil)
	if strings.Contains(page, `id="api-key"`) || !strings.Contains(page, `data-session-auth="true"`) || strings.Contains(page, `id="live"`) {
		t.Errorf("SessionAuth page: key field or live view present")
	}
}

func TestNewChecksOptions(t *testing.T) {
	for _, o := range []dashboard.Options{
		{},
		{API: &fakeAPI{}, BatchPath: "messages"},
		{API: &fakeAPI{}, BatchPath: "/messages/"},
		{API: &fakeAPI{}, Live: &dashboard.Live{Base: "/x/"}},
	} {
		if _, err := dashboard.New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// sse reads events from a stream.
type sse struct {
	t      *testing.T
	events chan [2]string
	res    *http.Response
}

func openSSE(t *testing.T, ctx context.Context, u string, header map[string]string) (*sse, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 {
		return nil, res
	}
	s := &sse{t: t, events: make(chan [2]string, 100), res: res}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				s.events <- [2]string{name, v}
			}
		}
	}()
	return s, res
}

func (s *sse) next(want string) map[string]any {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("the stream ended before a %s event", want)
			}
			if ev[0] == want {
				var m map[string]any
				if err := json.Unmarshal([]byte(ev[1]), &m); err != nil {
					s.t.Fatalf("event %s: %v: %s", ev[0], err, ev[1])
				}
				return m
			}
		case <-time.After(5 * time.Second):
			s.t.Fatalf("no %s event within 5 s", want)
		}
	}
}

// nextEach returns the next event of each of wants, in whichever order
// they come (one poll may see a change in the batch before the list).
func (s *sse) nextEach(wants ...string) map[string]map[string]any {
	s.t.Helper()
	got := map[string]map[string]any{}
	for len(got) < len(wants) {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("the stream ended before the events %v (got %v)", wants, got)
			}
			if _, seen := got[ev[0]]; seen || !slices.Contains(wants, ev[0]) {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(ev[1]), &m); err != nil {
				s.t.Fatalf("event %s: %v: %s", ev[0], err, ev[1])
			}
			got[ev[0]] = m
		case <-time.After(5 * time.Second):
			s.t.Fatalf("not every one of %v within 5 s (got %v)", wants, got)
		}
	}
	return got
}

func TestEventsStreamChanges(t *testing.T) {
	api := &fakeAPI{}
	api.setSent(3)
	srv := newDashboard(t, api, dashboard.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, res := openSSE(t, ctx, srv.URL+"/admin/batches/batch-events?batch=batch-1", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("GET batch-events = %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" || res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", res.Header)
	}
	if m := s.next("ready"); m["batch"] != "batch-1" {
		t.Errorf("ready %v", m)
	}
	list := s.next("batches")
	if b := list["batches"].([]any)[0].(map[string]any); b["sent"] != 3.0 || b["status"] != "running" {
		t.Errorf("batches %v", list)
	}
	if b := s.next("batch"); b["sent"] != 3.0 {
		t.Errorf("batch %v", b)
	}
	// Nothing changes: nothing is sent, though the API is polled.
	before := api.calls.Load()
	time.Sleep(150 * time.Millisecond)
	if api.calls.Load()-before < 4 {
		t.Errorf("the API was polled %d times in 150 ms at a 20 ms interval", api.calls.Load()-before)
	}
	select {
	case ev := <-s.events:
		t.Errorf("an event without a change: %v", ev)
	default:
	}
	api.setSent(10)
	changed := s.nextEach("batches", "batch")
	if b := changed["batches"]["batches"].([]any)[0].(map[string]any); b["sent"] != 10.0 || b["status"] != "completed" {
		t.Errorf("after the change: %v", b)
	}
	if b := changed["batch"]; b["status"] != "completed" {
		t.Errorf("batch after the change %v", b)
	}
	// The credentials reached the API; nothing else did.
	api.mu.Lock()
	for i, k := range api.keys {
		if k != "k" || api.cookies[i] != "" {
			t.Errorf("call %d had key %q cookie %q", i, k, api.cookies[i])
			break
		}
	}
	api.mu.Unlock()

	// A stream ends when its client goes.
	cancel()
	time.Sleep(50 * time.Millisecond)
	n := api.calls.Load()
	time.Sleep(100 * time.Millisecond)
	if api.calls.Load() != n {
		t.Errorf("the API is still polled after the client left")
	}
}

func TestEventsAuth(t *testing.T) {
	api := &fakeAPI{}
	srv := newDashboard(t, api, dashboard.Options{})
	// No credentials, a wrong key, a key in the URL: the API's 401, no stream.
	for _, c := range []struct {
		url    string
		header map[string]string
	}{
		{"/admin/batches/batch-events", nil},
		{"/admin/batches/batch-events", map[string]string{"IM-API-KEY": "wrong"}},
		{"/admin/batches/batch-events?key=k", nil},
	} {
		res, body := get(t, srv.URL+c.url, c.header)
		if res.StatusCode == 200 && c.url == "/admin/batches/batch-events?key=k" {
			t.Errorf("a key in the URL was accepted")
		}
		if c.url != "/admin/batches/batch-events?key=k" && (res.StatusCode != 401 || !strings.Contains(body, "INVALID_API_KEY")) {
			t.Errorf("GET %s %v = %d %s", c.url, c.header, res.StatusCode, body)
		}
	}
	// The host's session cookie is forwarded.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, res := openSSE(t, ctx, srv.URL+"/admin/batches/batch-events", map[string]string{"Cookie": "session=s"})
	if s == nil {
		t.Fatalf("with the session cookie: %d", res.StatusCode)
	}
	s.next("batches")
	// Options.Forward limits what is passed on.
	srv = newDashboard(t, api, dashboard.Options{Forward: []string{"IM-API-KEY"}})
	if res, _ := get(t, srv.URL+"/admin/batches/batch-events", map[string]string{"Cookie": "session=s"}); res.StatusCode != 401 {
		t.Errorf("a cookie not in Forward was passed on: %d", res.StatusCode)
	}
}

func TestEventsAPIErrors(t *testing.T) {
	api := &fakeAPI{notList: true}
	srv := newDashboard(t, api, dashboard.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, res := openSSE(t, ctx, srv.URL+"/admin/batches/batch-events?batch=nope", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("status %d", res.StatusCode)
	}
	e := s.next("apierror")
	if e["status"] != 501.0 || e["of"] != "list" || e["error"].(map[string]any)["code"] != "NOT_SUPPORTED" {
		t.Errorf("first apierror %v", e)
	}
	e = s.next("apierror")
	if e["status"] != 404.0 || e["of"] != "batch" || e["error"].(map[string]any)["code"] != "BATCH_NOT_FOUND" {
		t.Errorf("second apierror %v", e)
	}
	// The list is not asked again after a 501: only the batch is polled.
	time.Sleep(50 * time.Millisecond)
	api.mu.Lock()
	n := len(api.keys)
	api.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	api.mu.Lock()
	m := len(api.keys)
	api.mu.Unlock()
	if m-n > 8 {
		t.Errorf("%d polls in 100 ms at 20 ms with one target", m-n)
	}

	// A 429 waits for its Retry-After.
	api2 := &fakeAPI{status: 429, retry: "1"}
	srv2 := newDashboard(t, api2, dashboard.Options{})
	s2, res := openSSE(t, ctx, srv2.URL+"/admin/batches/batch-events", map[string]string{"IM-API-KEY": "k"})
	if s2 == nil {
		t.Fatalf("status %d", res.StatusCode)
	}
	if e := s2.next("apierror"); e["status"] != 429.0 {
		t.Errorf("apierror %v", e)
	}
	time.Sleep(300 * time.Millisecond)
	if n := api2.calls.Load(); n != 1 {
		t.Errorf("%d calls within 300 ms of a 429 with Retry-After: 1", n)
	}

	// An unknown parameter is refused.
	if res, _ := get(t, srv.URL+"/admin/batches/batch-events?user=x", map[string]string{"IM-API-KEY": "k"}); res.StatusCode != 400 {
		t.Errorf("unknown parameter: %d", res.StatusCode)
	}
}

// TestEventsEndWhenTheKeyIsRevoked: a 401 mid-stream is reported and
// ends the stream.
func TestEventsEndWhenTheKeyIsRevoked(t *testing.T) {
	api := &fakeAPI{}
	srv := newDashboard(t, api, dashboard.Options{})
	s, res := openSSE(t, t.Context(), srv.URL+"/admin/batches/batch-events", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("status %d", res.StatusCode)
	}
	s.next("batches")
	api.mu.Lock()
	api.status = 401
	api.mu.Unlock()
	if e := s.next("apierror"); e["status"] != 401.0 || e["of"] != "auth" {
		t.Errorf("apierror %v", e)
	}
	for range s.events {
	}
}

// outerKey is a context value of the incoming request, as a router keeps
// its route state (chi's *chi.Context under chi.RouteCtxKey).
type outerKey struct{}

// routerLikeAPI is an API that, like a chi Mux, treats a request whose
// context carries the outer request's routing state as a sub-router call
// (and finds no route for it); and that records whether its request's
// context ends when the browser leaves.
type routerLikeAPI struct {
	fakeAPI
	leaked  atomic.Int64
	blocked chan struct{} // closed by the test: the next call waits for its context
	waiting chan struct{} // closed when a call waits
	ended   chan struct{} // closed when the waiting call's context ended
	once    sync.Once
}

func (a *routerLikeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Context().Value(outerKey{}) != nil {
		a.leaked.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"RC":404,"RM":"Not Found","error":{"code":"NOT_FOUND","message":"no route (sub-router state leaked)","details":[]}}`)
		return
	}
	select {
	case <-a.blocked:
		a.once.Do(func() {
			close(a.waiting)
			<-r.Context().Done()
			close(a.ended)
		})
		return
	default:
	}
	a.fakeAPI.ServeHTTP(w, r)
}

// TestEventsCallTheAPIWithoutTheRequestsValues: the in-process calls of
// the events endpoint carry none of the incoming request's context values
// (a router's state in them made chi answer every poll with 404), yet end
// when the incoming request does.
func TestEventsCallTheAPIWithoutTheRequestsValues(t *testing.T) {
	api := &routerLikeAPI{blocked: make(chan struct{}), waiting: make(chan struct{}), ended: make(chan struct{})}
	api.setSent(3)
	d, err := dashboard.New(dashboard.Options{API: api, BatchPath: "/api/messages/batch", Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	withValue := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), outerKey{}, "outer route state")
		http.StripPrefix("/admin/batches", d).ServeHTTP(w, r.WithContext(ctx))
	})
	srv := httptest.NewServer(withValue)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, res := openSSE(t, ctx, srv.URL+"/admin/batches/batch-events", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("GET batch-events = %d", res.StatusCode)
	}
	s.next("ready")
	ev := <-s.events
	if ev[0] != "batches" || !strings.Contains(ev[1], `"batchID":"batch-1"`) {
		t.Fatalf("first event %s %s, want the list of batches", ev[0], ev[1])
	}
	if n := api.leaked.Load(); n != 0 {
		t.Errorf("%d in-process calls carried the incoming request's context values", n)
	}
	// The next poll waits on its context: the browser leaving ends it.
	close(api.blocked)
	select {
	case <-api.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("no poll within 5 s at a 20 ms interval")
	}
	cancel()
	select {
	case <-api.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the in-process call's context did not end within 5 s of the browser leaving")
	}
}

// TestEventsQueue: with queue=true the stream carries the queue's health
// too, polled less often than the list (every 2 s at most); a 403 (not an
// admin) is reported once and the queue is not asked again, while the
// list goes on.
func TestEventsQueue(t *testing.T) {
	api := &fakeAPI{}
	api.setSent(4)
	srv := newDashboard(t, api, dashboard.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, res := openSSE(t, ctx, srv.URL+"/admin/batches/batch-events?queue=true", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("status %d", res.StatusCode)
	}
	if m := s.next("ready"); m["queue"] != true {
		t.Errorf("ready %v", m)
	}
	if q := s.next("queue"); q["queue"] != "chatbatch" || q["pending"] != 4.0 {
		t.Errorf("queue %v", q)
	}
	api.setSent(5)
	s.next("batches")
	if n := api.queues.Load(); n != 1 {
		t.Errorf("the queue was asked %d times at once, want 1", n)
	}
	if q := s.next("queue"); q["pending"] != 5.0 {
		t.Errorf("queue after the change %v", q)
	}

	forbidden := &fakeAPI{queue: 403}
	srv = newDashboard(t, forbidden, dashboard.Options{})
	s, res = openSSE(t, ctx, srv.URL+"/admin/batches/batch-events?queue=1", map[string]string{"IM-API-KEY": "k"})
	if s == nil {
		t.Fatalf("a 403 of the queue ended the stream: %d", res.StatusCode)
	}
	if e := s.next("apierror"); e["of"] != "queue" || e["status"] != 403.0 {
		t.Errorf("apierror %v", e)
	}
	forbidden.setSent(7)
	if b := s.next("batches")["batches"].([]any)[0].(map[string]any); b["sent"] != 7.0 {
		t.Errorf("the list after the queue's 403: %v", b)
	}
	if n := forbidden.queues.Load(); n != 1 {
		t.Errorf("the queue was asked %d times after a 403", n)
	}
	if res, _ := get(t, srv.URL+"/admin/batches/batch-events?queue=maybe", map[string]string{"IM-API-KEY": "k"}); res.StatusCode != 400 {
		t.Errorf("queue=maybe: %d", res.StatusCode)
	}
}
