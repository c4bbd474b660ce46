package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/adapters/webhook"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

var (
	secret    = "whsec_" + base64.StdEncoding.EncodeToString([]byte("a test secret of 32 bytes long!!"))
	oldSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("the secret before the rotation.."))
)

// receiver is a host endpoint: it verifies every request, records what it
// got, and fails requests on demand.
type receiver struct {
	t      *testing.T
	mu     sync.Mutex
	msgs   []store.Message
	gone   []store.Message // retracted
	notes  []delivery.Notification
	calls  int
	ids    []string
	fail   []int // statuses to answer with next
	bodies [][]byte
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := webhook.Verify([]string{secret}, req.Header, body, time.Now(), 0); err != nil {
		r.t.Errorf("a request did not verify: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.ids = append(r.ids, req.Header.Get("webhook-id"))
	r.bodies = append(r.bodies, body)
	if len(r.fail) > 0 {
		status := r.fail[0]
		r.fail = r.fail[1:]
		w.WriteHeader(status)
		return
	}
	var env struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		r.t.Errorf("body: %v", err)
	}
	switch env.Type {
	case "messages":
		var ms []delivery.MessageJSON
		if err := json.Unmarshal(env.Data, &ms); err != nil {
			r.t.Errorf("messages: %v", err)
		}
		for _, m := range ms {
			r.msgs = append(r.msgs, m.StoreMessage())
		}
	case "retraction":
		var ms []delivery.MessageJSON
		if err := json.Unmarshal(env.Data, &ms); err != nil {
			r.t.Errorf("retraction: %v", err)
		}
		for _, m := range ms {
			r.gone = append(r.gone, m.StoreMessage())
		}
	case "push":
		var ns []delivery.Notification
		if err := json.Unmarshal(env.Data, &ns); err != nil {
			r.t.Errorf("push: %v", err)
		}
		r.notes = append(r.notes, ns...)
	default:
		r.t.Errorf("type %q", env.Type)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) FailNext(permanent bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if permanent {
		r.fail = append(r.fail, http.StatusUnprocessableEntity)
	} else {
		r.fail = append(r.fail, http.StatusServiceUnavailable)
	}
}

func (r *receiver) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

type deliverHarness struct {
	*receiver
	d *webhook.Deliverer
}

func (h deliverHarness) Deliverer() delivery.Deliverer { return h.d }
func (h deliverHarness) Received(context.Context) ([]store.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]store.Message(nil), h.msgs...), nil
}

func (h deliverHarness) Retracted(context.Context) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for _, m := range h.gone {
		ids = append(ids, m.ID)
	}
	return ids, nil
}

type pushHarness struct {
	*receiver
	p *webhook.Pusher
}

func (h pushHarness) Pusher() delivery.Pusher { return h.p }
func (h pushHarness) Received(context.Context) ([]delivery.Notification, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery.Notification(nil), h.notes...), nil
}

func TestDelivererConformance(t *testing.T) {
	deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness {
		r := newReceiver(t)
		d, err := webhook.NewDeliverer(&webhook.Options{URL: r.srv.URL, Secrets: []string{secret}})
		if err != nil {
			t.Fatal(err)
		}
		return deliverHarness{r, d}
	})
}

func TestPusherConformance(t *testing.T) {
	deliverytest.RunPusher(t, func(t *testing.T) deliverytest.PusherHarness {
		r := newReceiver(t)
		p, err := webhook.NewPusher(&webhook.Options{URL: r.srv.URL, Secrets: []string{secret}})
		if err != nil {
			t.Fatal(err)
		}
		return pushHarness{r, p}
	})
}

func messages(n int) []store.Message {
	out := make([]store.Message, n)
	for i := range out {
		out[i] = store.Message{ID: fmt.Sprintf("b-%d", i), AppID: "app", RoomID: "r", Sender: "system", Type: "text",
			Text: strings.Repeat("x", 100), BatchID: "b", Index: i, CreatedAt: time.Now().UTC()}
	}
	return out
}

// TestAnswers maps the receiver's statuses to delivered, permanent and
// transient, with Retry-After carried.
func TestAnswers(t *testing.T) {
	for _, c := range []struct {
		status     int
		retryAfter string
		permanent  bool
		wait       time.Duration
	}{
		{400, "", true, 0}, {401, "", true, 0}, {403, "", true, 0}, {404, "", true, 0}, {410, "", true, 0}, {413, "", true, 0}, {422, "", true, 0},
		{408, "", false, 0}, {425, "", false, 0}, {429, "7", false, 7 * time.Second}, {500, "", false, 0}, {503, "120", false, 2 * time.Minute},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if c.retryAfter != "" {
				w.Header().Set("Retry-After", c.retryAfter)
			}
			w.WriteHeader(c.status)
		}))
		d, err := webhook.NewDeliverer(&webhook.Options{URL: srv.URL, Secrets: []string{secret}})
		if err != nil {
			t.Fatal(err)
		}
		err = d.Deliver(t.Context(), messages(2))
		srv.Close()
		errs := delivery.ItemErrors(err, 2)
		if errs[0] == nil || delivery.IsPermanent(errs[0]) != c.permanent || !strings.Contains(errs[0].Error(), fmt.Sprint(c.status)) {
			t.Errorf("%d: %v, want permanent=%v naming the status", c.status, err, c.permanent)
		}
		if got := delivery.RetryAfter(err); got != c.wait {
			t.Errorf("%d: RetryAfter = %v, want %v", c.status, got, c.wait)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "whsec_") {
			t.Errorf("%d: the error shows the secret: %v", c.status, err)
		}
	}
}

// TestPartialAnswer: a 2xx naming failed messages fails only those.
func TestPartialAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"failed":[{"id":"b-1","error":"user blocked the sender","permanent":true},{"id":"b-2","error":"try later"}]}`))
	}))
	defer srv.Close()
	d, err := webhook.NewDeliverer(&webhook.Options{URL: srv.URL, Secrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	errs := delivery.ItemErrors(d.Deliver(t.Context(), messages(3)), 3)
	if errs[0] != nil || !delivery.IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), "blocked") || errs[2] == nil || delivery.IsPermanent(errs[2]) {
		t.Errorf("item errors %v", errs)
	}
}

// TestSplitAndStableIDs: a chunk is split at MaxItems and MaxBodyBytes;
// the same messages get the same webhook-id on every attempt; rotation
// signs with every secret.
func TestSplitAndStableIDs(t *testing.T) {
	r := newReceiver(t)
	d, err := webhook.NewDeliverer(&webhook.Options{URL: r.srv.URL, Secrets: []string{oldSecret, secret}, MaxItems: 2})
	if err != nil {
		t.Fatal(err)
	}
	msgs := messages(5)
	for range 2 {
		if err := d.Deliver(t.Context(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	if r.Calls() != 6 {
		t.Fatalf("%d requests for 2 × 5 messages at 2 per request, want 6", r.Calls())
	}
	if r.ids[0] != r.ids[3] || r.ids[1] != r.ids[4] || r.ids[0] == r.ids[1] {
		t.Errorf("webhook-ids %v: want the same per request across attempts, different between requests", r.ids)
	}
	d, err = webhook.NewDeliverer(&webhook.Options{URL: r.srv.URL, Secrets: []string{secret}, MaxBodyBytes: 600})
	if err != nil {
		t.Fatal(err)
	}
	before := r.Calls()
	if err := d.Deliver(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}
	if n := r.Calls() - before; n < 3 {
		t.Errorf("%d requests for 5 messages of ~300 bytes with MaxBodyBytes 600, want at least 3", n)
	}
}

// TestRedirectAndTimeout: a redirect to another host is not followed and
// is permanent; a receiver that hangs is cut off at the timeout.
func TestRedirectAndTimeout(t *testing.T) {
	other := newReceiver(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, strings.Replace(other.srv.URL, "127.0.0.1", "localhost", 1)+"/elsewhere", http.StatusMovedPermanently)
	}))
	defer redirect.Close()
	d, err := webhook.NewDeliverer(&webhook.Options{URL: redirect.URL, Secrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Deliver(t.Context(), messages(1))
	if !delivery.IsPermanent(err) || !strings.Contains(err.Error(), "not followed") || other.Calls() != 0 {
		t.Errorf("redirect to another host: %v (other host called %d times)", err, other.Calls())
	}

	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-req.Context().Done():
		case <-time.After(time.Second):
		}
	}))
	defer hang.Close()
	d, err = webhook.NewDeliverer(&webhook.Options{URL: hang.URL, Secrets: []string{secret}, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = d.Deliver(t.Context(), messages(1))
	if err == nil || delivery.IsPermanent(err) || time.Since(start) > 3*time.Second {
		t.Errorf("hanging receiver: %v after %v, want a transient error at the timeout", err, time.Since(start))
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []*webhook.Options{
		nil,
		{URL: "ftp://x", Secrets: []string{secret}},
		{URL: "http://x"},
		{URL: "http://x", Secrets: []string{"not-a-secret"}},
		{URL: "http://x", Secrets: []string{"whsec_!!!"}},
	} {
		if _, err := webhook.NewDeliverer(o); err == nil {
			t.Errorf("NewDeliverer(%+v) succeeded", o)
		} else if o != nil && len(o.Secrets) > 0 && strings.Contains(err.Error(), o.Secrets[0]) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

func TestVerify(t *testing.T) {
	now := time.Now()
	h, body := capture(t, now, []string{secret})
	if err := webhook.Verify([]string{secret}, h, body, now, 0); err != nil {
		t.Fatalf("Verify of a good request: %v", err)
	}
	changed := append(bytes.Clone(body[:len(body)-1]), ' ', '}')
	for name, c := range map[string]struct {
		secrets []string
		body    []byte
		at      time.Time
	}{
		"other secret":  {[]string{oldSecret}, body, now},
		"changed body":  {[]string{secret}, changed, now},
		"too old":       {[]string{secret}, body, now.Add(10 * time.Minute)},
		"from a future": {[]string{secret}, body, now.Add(-10 * time.Minute)},
	} {
		if err := webhook.Verify(c.secrets, h, c.body, c.at, 0); !errors.Is(err, webhook.ErrVerify) {
			t.Errorf("%s: Verify = %v, want ErrVerify", name, err)
		}
	}
}

// capture returns the headers and body of one real request of a Deliverer.
func capture(t *testing.T, now time.Time, secrets []string) (http.Header, []byte) {
	t.Helper()
	var h http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h = req.Header.Clone()
		body, _ = io.ReadAll(req.Body)
	}))
	defer srv.Close()
	d, err := webhook.NewDeliverer(&webhook.Options{URL: srv.URL, Secrets: secrets, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	msgs := messages(2)
	msgs[0].Text = "系統公告 🚀 \"quoted\" \\ <b>"
	if err := d.Deliver(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}
	return h, body
}

// TestReferenceLibraryAccepts checks this package's signatures with the
// Standard Webhooks reference implementation (npm standardwebhooks).
func TestReferenceLibraryAccepts(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Skip(t, "install node and the npm package standardwebhooks (npm install standardwebhooks; set NODE_PATH to its node_modules) to check the signatures against the reference library")
	}
	captured, body := capture(t, time.Now(), []string{oldSecret, secret})
	script, _ := filepath.Abs(filepath.Join("testdata", "verify.js"))
	run := func(sec string, payload []byte) (int, string) {
		cmd := exec.Command(node, script, sec, captured.Get("webhook-id"), captured.Get("webhook-timestamp"), captured.Get("webhook-signature"))
		cmd.Stdin = bytes.NewReader(payload)
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := run(secret, body)
	if code == 2 {
		if os.Getenv("CHATBATCH_REQUIRE_STANDARDWEBHOOKS") != "" {
			t.Fatalf("the reference library is required here: %s", out)
		}
		testenv.Skip(t, "npm install standardwebhooks (and set NODE_PATH to its node_modules) to run this test: %s", out)
	}
	if code != 0 {
		t.Fatalf("the reference library refused our signature: %s", out)
	}
	if code, _ := run(oldSecret, body); code != 0 {
		t.Errorf("the reference library refused the rotated-out secret's signature")
	}
	if code, _ := run(secret, append(body[:len(body):len(body)], ' ')); code != 1 {
		t.Errorf("the reference library accepted a changed body (exit %d)", code)
	}
}

// TestRetract: a recall's retraction is a signed POST of type retraction
// with the messages' IDs and routing, under a webhook-id of its own.
func TestRetract(t *testing.T) {
	r := newReceiver(t)
	d, err := webhook.NewDeliverer(&webhook.Options{URL: r.srv.URL, Secrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	msgs := messages(2)
	if err := d.Deliver(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}
	retract := []store.Message{{ID: msgs[0].ID, AppID: msgs[0].AppID, RoomID: msgs[0].RoomID, Sender: msgs[0].Sender}, {ID: msgs[1].ID, AppID: msgs[1].AppID, RoomID: msgs[1].RoomID, Sender: msgs[1].Sender}}
	if err := d.Retract(t.Context(), retract); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	if len(r.gone) != 2 || r.gone[0].ID != msgs[0].ID || r.gone[1].RoomID != msgs[1].RoomID || r.gone[0].Text != "" {
		t.Errorf("retracted %+v", r.gone)
	}
	if len(r.ids) != 2 || r.ids[0] == r.ids[1] {
		t.Errorf("webhook-ids %v: a retraction needs its own", r.ids)
	}
	r.fail = append(r.fail, http.StatusServiceUnavailable)
	calls := r.calls
	r.mu.Unlock() // the receiver takes the lock to answer

	// The receiver answers 503; the error must say so (not a client
	// timeout, which would be transient too).
	err = d.Retract(t.Context(), retract)
	if err == nil || delivery.IsPermanent(err) || !strings.Contains(err.Error(), "answered 503") {
		t.Errorf("a 503 to a retraction = %v, want a transient error naming the 503", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls != calls+1 || len(r.fail) != 0 {
		t.Errorf("the receiver answered %d requests and has %d failures left, want 1 request answered with its 503", r.calls-calls, len(r.fail))
	}
}

// TestOwnTransport: the default client's connections are the adapter's
// own, not http.DefaultTransport's. Whatever else in the program closes
// that transport's idle connections — httptest.Server.Close does, so in
// tests every other test's server — can break a POST in flight on it
// (the transport retries no POST), and once failed the conformance
// suite's concurrent test in CI. Not parallel: it swaps
// http.DefaultTransport for one that fails every request.
func TestOwnTransport(t *testing.T) {
	r := newReceiver(t)
	d, err := webhook.NewDeliverer(&webhook.Options{URL: r.srv.URL, Secrets: []string{secret}})
	if err != nil {
		t.Fatal(err)
	}
	orig := http.DefaultTransport
	http.DefaultTransport = failingTransport{}
	defer func() { http.DefaultTransport = orig }()
	if err := d.Deliver(t.Context(), messages(2)); err != nil {
		t.Fatalf("the deliverer's requests went through http.DefaultTransport: %v", err)
	}
}

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("http.DefaultTransport used")
}
