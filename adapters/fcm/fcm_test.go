package fcm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/chatbatch/chatbatch/adapters/fcm"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
)

const (
	project     = "test-project"
	clientEmail = "pusher@test-project.iam.gserviceaccount.com"
	keyID       = "key-1"
)

// testKey is the service account's RSA key, made once per test run.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func keyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(testKey())
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// serviceAccount is a service-account key for tokenURI, changed by edit.
func serviceAccount(tokenURI string, edit func(map[string]any)) []byte {
	sa := map[string]any{
		"type": "service_account", "project_id": project, "private_key_id": keyID, "private_key": keyPEM(),
		"client_email": clientEmail, "client_id": "1234567890", "token_uri": tokenURI,
		"auth_uri": "https://accounts.google.com/o/oauth2/auth",
	}
	if edit != nil {
		edit(sa)
	}
	b, err := json.Marshal(sa)
	if err != nil {
		panic(err)
	}
	return b
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// oauthServer is a fake Google token endpoint: it accepts the JWT-bearer
// grant of an assertion signed by testKey and issues access tokens.
type oauthServer struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	issued []string
	hang   bool   // answer only when the request is canceled
	fail   string // a body to answer 400 with
	done   chan struct{}
}

func newOAuthServer(t *testing.T) *oauthServer {
	o := &oauthServer{t: t, done: make(chan struct{})}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	t.Cleanup(func() { close(o.done) }) // first: ends hanging requests
	return o
}

func (o *oauthServer) set(hang bool, fail string) {
	o.mu.Lock()
	o.hang, o.fail = hang, fail
	o.mu.Unlock()
}

func (o *oauthServer) tokenURI() string { return o.srv.URL + "/token" }

func (o *oauthServer) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	hang, fail := o.hang, o.fail
	o.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-o.done:
		}
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		o.t.Errorf("token endpoint: %s %s", r.Method, r.URL.Path)
	}
	if err := r.ParseForm(); err != nil {
		o.t.Errorf("token endpoint: form: %v", err)
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		o.t.Errorf("token endpoint: grant_type %q", g)
	}
	if err := o.verify(r.PostForm.Get("assertion")); err != nil {
		o.t.Errorf("token endpoint: assertion: %v", err)
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	if fail != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, fail)
		return
	}
	o.mu.Lock()
	tok := fmt.Sprintf("ya29.fake-access-token-%d-%x", len(o.issued)+1, time.Now().UnixNano())
	o.issued = append(o.issued, tok)
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
}

// verify checks an RS256 JWT against testKey's public key and the claims
// a service account's assertion must carry.
func (o *oauthServer) verify(assertion string) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%d parts", len(parts))
	}
	var header struct{ Alg, Typ, Kid string }
	var claims struct {
		Iss, Scope, Aud string
		Iat, Exp        int64
	}
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return err
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&testKey().PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	now := time.Now().Unix()
	switch {
	case header.Alg != "RS256" || header.Kid != keyID:
		return fmt.Errorf("header %+v", header)
	case claims.Iss != clientEmail || claims.Scope != fcm.Scope || claims.Aud != o.tokenURI():
		return fmt.Errorf("claims %+v", claims)
	case claims.Iat > now+60 || claims.Exp <= now || claims.Exp > now+3700:
		return fmt.Errorf("times iat %d exp %d, now %d", claims.Iat, claims.Exp, now)
	}
	return nil
}

func (o *oauthServer) calls() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.issued)
}

func (o *oauthServer) issuedTokens() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.issued)
}

func (o *oauthServer) valid(auth string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	return ok && slices.Contains(o.issued, tok)
}

// wireMessage is what FCM receives, decoded strictly.
type wireMessage struct {
	Token        string `json:"token"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
	Data    map[string]string `json:"data"`
	Android json.RawMessage   `json:"android"`
	APNS    *struct {
		Payload struct {
			APS struct {
				Badge *int `json:"badge"`
			} `json:"aps"`
		} `json:"payload"`
	} `json:"apns"`
}

// answer is what the fake FCM answers one request with.
type answer struct {
	status int
	header map[string]string
	body   string
	hang   bool
}

// fcmServer is a fake FCM v1 endpoint: it checks each request's path,
// bearer token and body, records the messages it accepted, and answers
// as answerFor says (200 when it is nil).
type fcmServer struct {
	t         *testing.T
	srv       *httptest.Server
	authOK    func(auth string) bool
	mu        sync.Mutex
	got       []wireMessage
	auths     []string
	perSend   map[string]int // requests per messageID/token
	requests  int
	inFlight  int
	maxFlight int
	answerFor func(m wireMessage) answer
	done      chan struct{}
}

func newFCMServer(t *testing.T, authOK func(string) bool) *fcmServer {
	f := &fcmServer{t: t, authOK: authOK, perSend: map[string]int{}, done: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.done) }) // first: ends hanging requests
	return f
}

func (f *fcmServer) serve(w http.ResponseWriter, r *http.Request) {
	if want := "/v1/projects/" + project + "/messages:send"; r.Method != http.MethodPost || r.URL.Path != want {
		f.t.Errorf("FCM: %s %s, want POST %s", r.Method, r.URL.Path, want)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		f.t.Errorf("FCM: Content-Type %q", ct)
	}
	auth := r.Header.Get("Authorization")
	if !f.authOK(auth) {
		f.t.Errorf("FCM: Authorization %q is not a bearer token the token endpoint issued", auth)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var body struct {
		Message wireMessage `json:"message"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		f.t.Errorf("FCM: body: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	m := body.Message
	f.mu.Lock()
	f.requests++
	f.perSend[m.Data["messageID"]+"/"+m.Token]++
	f.inFlight++
	f.maxFlight = max(f.maxFlight, f.inFlight)
	answerFor := f.answerFor
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	a := answer{status: http.StatusOK}
	if answerFor != nil {
		a = answerFor(m)
	}
	if a.hang {
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
		return
	}
	if a.status == http.StatusOK {
		time.Sleep(time.Millisecond) // let sends overlap
		f.mu.Lock()
		f.got = append(f.got, m)
		f.auths = append(f.auths, auth)
		f.mu.Unlock()
		fmt.Fprintf(w, `{"name":"projects/%s/messages/%d"}`, project, time.Now().UnixNano())
		return
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (f *fcmServer) setAnswer(fn func(m wireMessage) answer) {
	f.mu.Lock()
	f.answerFor = fn
	f.mu.Unlock()
}

func (f *fcmServer) received() []wireMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

func (f *fcmServer) sends(messageID, token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.perSend[messageID+"/"+token]
}

// fcmError is an FCM v1 error body.
func fcmError(code int, status, errorCode, message string) string {
	e := map[string]any{"code": code, "message": message, "status": status}
	if errorCode != "" {
		e["details"] = []any{map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode}}
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return string(b)
}

var (
	unregistered = answer{status: 404, body: fcmError(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")}
	badToken     = answer{status: 400, body: fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token")}
	unavailable  = answer{status: 503, body: fcmError(503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable.")}
)

// env is a fake token endpoint, a fake FCM and a service-account file
// pointing at the former.
type env struct {
	oauth  *oauthServer
	fcm    *fcmServer
	saFile string
}

func newEnv(t *testing.T) *env {
	e := &env{oauth: newOAuthServer(t)}
	e.fcm = newFCMServer(t, e.oauth.valid)
	e.saFile = writeFile(t, "service-account.json", serviceAccount(e.oauth.tokenURI(), nil))
	return e
}

// options push to the users of tokens (user → device tokens).
func (e *env) options(tokens map[string][]string) *fcm.Options {
	return &fcm.Options{CredentialsFile: e.saFile, Endpoint: e.fcm.srv.URL, Tokens: staticTokens(tokens)}
}

func (e *env) pusher(t *testing.T, o *fcm.Options) *fcm.Pusher {
	t.Helper()
	p, err := fcm.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func staticTokens(tokens map[string][]string) fcm.TokensFunc {
	return func(_ context.Context, _ string, users []string) (map[string][]string, error) {
		out := map[string][]string{}
		for _, u := range users {
			if ts, ok := tokens[u]; ok {
				out[u] = ts
			}
		}
		return out, nil
	}
}

func note(user, msg string) delivery.Notification {
	return delivery.Notification{AppID: "app1", UserID: user, MessageID: msg, RoomID: "room-1", Sender: "system", Type: "text", Text: "hello " + user}
}

// harness runs deliverytest.RunPusher: every user "user-N" has the one
// device token "tok-user-N", and a notification is rebuilt from what FCM
// received (the body is the text, the data the IDs, the APNs badge the
// Badge flag).
type harness struct {
	*env
	p    *fcm.Pusher
	mu   sync.Mutex
	fail *answer // FailNext: every request fails so until the Push returns
}

func (h *harness) Pusher() delivery.Pusher {
	return delivery.PusherFunc(func(ctx context.Context, ns []delivery.Notification) error {
		err := h.p.Push(ctx, ns)
		h.mu.Lock()
		h.fail = nil
		h.mu.Unlock()
		return err
	})
}

func (h *harness) Received(context.Context) ([]delivery.Notification, error) {
	var out []delivery.Notification
	for _, m := range h.fcm.received() {
		if m.Notification == nil || m.Notification.Title != m.Data["sender"] {
			return nil, fmt.Errorf("message %+v: the title is not the sender", m)
		}
		out = append(out, delivery.Notification{
			AppID: m.Data["appID"], UserID: strings.TrimPrefix(m.Token, "tok-"), MessageID: m.Data["messageID"],
			RoomID: m.Data["roomID"], Sender: m.Data["sender"], Type: m.Data["type"], Text: m.Notification.Body,
			Badge: m.APNS != nil && m.APNS.Payload.APS.Badge != nil && *m.APNS.Payload.APS.Badge == 5,
		})
	}
	return out, nil
}

// FailNext fails the requests of the next Push: each user's only token
// is UNREGISTERED (permanent) or FCM is UNAVAILABLE (transient).
func (h *harness) FailNext(permanent bool) {
	a := unavailable
	if permanent {
		a = unregistered
	}
	h.mu.Lock()
	h.fail = &a
	h.mu.Unlock()
}

// Calls counts the calls FCM got for one notification and device: FCM
// has no batch endpoint, so one Push is one request per device, and a
// retry shows as a second request for the same message and token.
func (h *harness) Calls() int {
	h.fcm.mu.Lock()
	defer h.fcm.mu.Unlock()
	n := 0
	for _, c := range h.fcm.perSend {
		n = max(n, c)
	}
	return n
}

func TestPusherConformance(t *testing.T) {
	deliverytest.RunPusher(t, func(t *testing.T) deliverytest.PusherHarness {
		h := &harness{env: newEnv(t)}
		o := h.options(nil)
		o.Tokens = fcm.TokensFunc(func(_ context.Context, _ string, users []string) (map[string][]string, error) {
			out := map[string][]string{}
			for _, u := range users {
				out[u] = []string{"tok-" + u}
			}
			return out, nil
		})
		o.Badge = func(context.Context, string, string) (int, error) { return 5, nil }
		h.p = h.pusher(t, o)
		h.fcm.setAnswer(func(wireMessage) answer {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.fail != nil {
				return *h.fail
			}
			return answer{status: http.StatusOK}
		})
		return h
	})
}

// TestPush sends to users with several, one and no devices, and checks
// what FCM received and that one access token served every request.
func TestPush(t *testing.T) {
	e := newEnv(t)
	o := e.options(map[string][]string{"user-a": {"tok-a1", "tok-a2", "tok-a1"}, "user-b": {"tok-b"}})
	var badgeCalls atomic.Int32
	o.Badge = func(_ context.Context, app, user string) (int, error) {
		badgeCalls.Add(1)
		if app != "app1" || user != "user-b" {
			t.Errorf("Badge(%q, %q)", app, user)
		}
		return 3, nil
	}
	var tokenCalls atomic.Int32
	tokens := o.Tokens
	o.Tokens = fcm.TokensFunc(func(ctx context.Context, app string, users []string) (map[string][]string, error) {
		if tokenCalls.Add(1) == 1 && (app != "app1" || !slices.Equal(users, []string{"user-a", "user-b", "user-c"})) {
			t.Errorf("Tokens(%q, %q)", app, users)
		}
		return tokens.Tokens(ctx, app, users)
	})
	p := e.pusher(t, o)
	b := note("user-b", "m-1")
	b.Badge = true
	ns := []delivery.Notification{note("user-a", "m-1"), b, note("user-c", "m-1"), note("user-a", "m-2")}
	if err := p.Push(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	if n := tokenCalls.Load(); n != 1 {
		t.Errorf("%d Tokens calls for one Push, want 1", n)
	}
	if n := badgeCalls.Load(); n != 1 {
		t.Errorf("%d Badge calls, want 1 (only user-b's notification asks for it)", n)
	}
	got := e.fcm.received()
	if len(got) != 5 {
		t.Fatalf("FCM received %d messages, want 5 (user-a's two devices twice, user-b once): %+v", len(got), got)
	}
	for _, m := range got {
		user := map[string]string{"tok-a1": "user-a", "tok-a2": "user-a", "tok-b": "user-b"}[m.Token]
		wantData := map[string]string{"appID": "app1", "messageID": m.Data["messageID"], "roomID": "room-1", "sender": "system", "type": "text"}
		switch {
		case user == "":
			t.Errorf("a message to an unknown token %q", m.Token)
		case m.Notification == nil || m.Notification.Title != "system" || m.Notification.Body != "hello "+user:
			t.Errorf("to %s: notification %+v", m.Token, m.Notification)
		case fmt.Sprint(m.Data) != fmt.Sprint(wantData) || (m.Data["messageID"] != "m-1" && m.Data["messageID"] != "m-2"):
			t.Errorf("to %s: data %v", m.Token, m.Data)
		case m.Android != nil:
			t.Errorf("to %s: android %s without a Render asking for it", m.Token, m.Android)
		case user == "user-b" && (m.APNS == nil || m.APNS.Payload.APS.Badge == nil || *m.APNS.Payload.APS.Badge != 3):
			t.Errorf("to %s: apns %+v, want badge 3", m.Token, m.APNS)
		case user == "user-a" && m.APNS != nil:
			t.Errorf("to %s: apns %+v for a notification without Badge", m.Token, m.APNS)
		}
	}
	// A second Push reuses the cached access token.
	if err := p.Push(t.Context(), []delivery.Notification{note("user-b", "m-3")}); err != nil {
		t.Fatal(err)
	}
	if n := e.oauth.calls(); n != 1 {
		t.Errorf("the token endpoint issued %d access tokens for two Push calls, want 1", n)
	}
	issued := e.oauth.issuedTokens()
	e.fcm.mu.Lock()
	for _, a := range e.fcm.auths {
		if a != "Bearer "+issued[0] {
			t.Errorf("Authorization %q, want the issued token", a)
		}
	}
	e.fcm.mu.Unlock()
}

// TestRender: a custom Render's title, body, data and android config go
// out as they are.
func TestRender(t *testing.T) {
	e := newEnv(t)
	o := e.options(map[string][]string{"u": {"tok-u"}})
	o.Render = func(n delivery.Notification) fcm.Content {
		return fcm.Content{Title: "New message", Body: n.Text, Data: map[string]string{"room": n.RoomID},
			Android: json.RawMessage(`{"priority":"HIGH","ttl":"3600s"}`)}
	}
	if err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("u", "m")}); err != nil {
		t.Fatal(err)
	}
	got := e.fcm.received()
	if len(got) != 1 || got[0].Notification.Title != "New message" || fmt.Sprint(got[0].Data) != "map[room:room-1]" ||
		string(got[0].Android) != `{"priority":"HIGH","ttl":"3600s"}` {
		t.Errorf("received %+v", got)
	}
}

func TestDefaultRenderClipsTheBody(t *testing.T) {
	n := note("u", "m")
	n.Text = strings.Repeat("訊", 1000) // 3000 bytes
	c := fcm.DefaultRender(n)
	if len(c.Body) > fcm.MaxBodyBytes || !strings.HasSuffix(c.Body, "…") || !strings.HasPrefix(c.Body, "訊訊") || !utf8Valid(c.Body) {
		t.Errorf("body of %d bytes: %q…", len(c.Body), c.Body[:12])
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// TestInvalidTokens: an UNREGISTERED or invalid token is reported once
// and never retried; the user's other devices still get the notification;
// a user whose every token is invalid fails permanently with
// delivery.ErrUnregistered.
func TestInvalidTokens(t *testing.T) {
	e := newEnv(t)
	e.fcm.setAnswer(func(m wireMessage) answer {
		switch m.Token {
		case "gone-a", "gone-b":
			return unregistered
		case "garbage-a":
			return badToken
		}
		return answer{status: http.StatusOK}
	})
	o := e.options(map[string][]string{"user-a": {"gone-a", "good-a", "garbage-a"}, "user-b": {"gone-b"}})
	type report struct{ app, user, token string }
	var mu sync.Mutex
	var reports []report
	o.OnInvalidToken = func(_ context.Context, app, user, token string, reason error) {
		var fe *fcm.Error
		if !errors.Is(reason, delivery.ErrUnregistered) || !errors.As(reason, &fe) {
			t.Errorf("reason %v does not wrap delivery.ErrUnregistered and an *fcm.Error", reason)
		}
		if token == "gone-a" && (fe.Code != "UNREGISTERED" || fe.HTTPStatus != 404) {
			t.Errorf("reason for gone-a: %+v", fe)
		}
		mu.Lock()
		reports = append(reports, report{app, user, token})
		mu.Unlock()
	}
	err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("user-a", "m"), note("user-b", "m")})
	var pe *delivery.PartialError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[1] == nil {
		t.Fatalf("Push: %v, want a PartialError failing index 1 only", err)
	}
	if !errors.Is(pe.Failed[1], delivery.ErrUnregistered) || !delivery.IsPermanent(pe.Failed[1]) || !strings.Contains(pe.Failed[1].Error(), `"user-b"`) {
		t.Errorf("user-b's failure %v: want a permanent ErrUnregistered naming the user", pe.Failed[1])
	}
	slices.SortFunc(reports, func(a, b report) int { return strings.Compare(a.token, b.token) })
	want := []report{{"app1", "user-a", "garbage-a"}, {"app1", "user-a", "gone-a"}, {"app1", "user-b", "gone-b"}}
	if !slices.Equal(reports, want) {
		t.Errorf("OnInvalidToken got %v, want %v", reports, want)
	}
	for _, tok := range []string{"gone-a", "good-a", "garbage-a", "gone-b"} {
		if n := e.fcm.sends("m", tok); n != 1 {
			t.Errorf("%s got %d requests, want 1 (no retries)", tok, n)
		}
	}
	if got := e.fcm.received(); len(got) != 1 || got[0].Token != "good-a" {
		t.Errorf("delivered %+v, want only good-a", got)
	}
}

// TestAnswers maps FCM's answers to transient, permanent and invalid,
// with Retry-After carried.
func TestAnswers(t *testing.T) {
	in5 := time.Now().Add(5 * time.Minute).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		name    string
		a       answer
		want    string // transient, permanent, invalid
		wait    time.Duration
		errText string
	}{
		{"unregistered", unregistered, "invalid", 0, "404 UNREGISTERED"},
		{"invalid token", badToken, "invalid", 0, "400 INVALID_ARGUMENT"},
		{"invalid token field", answer{status: 400, body: `{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT",` +
			`"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}`}, "invalid", 0, "INVALID_ARGUMENT"},
		{"payload too big", answer{status: 400, body: fcmError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Message is too big")}, "permanent", 0, "Message is too big"},
		{"sender mismatch", answer{status: 403, body: fcmError(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch")}, "permanent", 0, "SENDER_ID_MISMATCH"},
		{"permission denied", answer{status: 403, body: fcmError(403, "PERMISSION_DENIED", "", "Permission 'cloudmessaging.messages.create' denied")}, "permanent", 0, "403 PERMISSION_DENIED"},
		{"apns auth", answer{status: 401, body: fcmError(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS or Web Push Service")}, "permanent", 0, "THIRD_PARTY_AUTH_ERROR"},
		{"unknown project", answer{status: 404, body: fcmError(404, "NOT_FOUND", "", "Requested entity was not found.")}, "permanent", 0, "404 NOT_FOUND"},
		{"quota", answer{status: 429, header: map[string]string{"Retry-After": "7"}, body: fcmError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded")}, "transient", 7 * time.Second, "429 QUOTA_EXCEEDED"},
		{"unavailable with a date", answer{status: 503, header: map[string]string{"Retry-After": in5}, body: unavailable.body}, "transient", 5 * time.Minute, "503 UNAVAILABLE"},
		{"internal", answer{status: 500, body: fcmError(500, "INTERNAL", "INTERNAL", "Internal error")}, "transient", 0, "500 INTERNAL"},
		{"bad gateway, no JSON", answer{status: 502, body: "<html>oops</html>"}, "transient", 0, "502 Bad Gateway"},
		{"unauthenticated", answer{status: 401, body: fcmError(401, "UNAUTHENTICATED", "", "Request had invalid authentication credentials.")}, "transient", 0, "access token was rejected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.fcm.setAnswer(func(wireMessage) answer { return c.a })
			o := e.options(map[string][]string{"user-a": {"tok-a"}, "user-b": {"tok-b"}})
			var invalid atomic.Int32
			o.OnInvalidToken = func(context.Context, string, string, string, error) { invalid.Add(1) }
			err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("user-a", "m"), note("user-b", "m")})
			errs := delivery.ItemErrors(err, 2)
			for i, ie := range errs {
				switch {
				case ie == nil:
					t.Fatalf("[%d] did not fail: %v", i, err)
				case !strings.Contains(ie.Error(), c.errText):
					t.Errorf("[%d] %v does not say %q", i, ie, c.errText)
				case delivery.IsPermanent(ie) != (c.want != "transient"):
					t.Errorf("[%d] %v: permanent=%v, want %s", i, ie, delivery.IsPermanent(ie), c.want)
				case errors.Is(ie, delivery.ErrUnregistered) != (c.want == "invalid"):
					t.Errorf("[%d] %v: unregistered=%v, want %s", i, ie, errors.Is(ie, delivery.ErrUnregistered), c.want)
				}
			}
			if delivery.IsPermanent(err) != (c.want != "transient") {
				t.Errorf("Push's error %v: permanent=%v, want %s", err, delivery.IsPermanent(err), c.want)
			}
			if n := invalid.Load(); (n == 2) != (c.want == "invalid") || (n != 0 && n != 2) {
				t.Errorf("OnInvalidToken called %d times", n)
			}
			if got := delivery.RetryAfter(err); got < c.wait-2*time.Second || got > c.wait {
				t.Errorf("RetryAfter = %v, want %v", got, c.wait)
			}
			if n := e.fcm.sends("m", "tok-a"); n != 1 {
				t.Errorf("%d requests for one notification and device; want 1, no retries", n)
			}
		})
	}
}

// TestQuotaExceeded: a 429 with Retry-After: 7 fails every notification
// transiently (nothing is dropped: none is permanent) and carries 7 s.
func TestQuotaExceeded(t *testing.T) {
	e := newEnv(t)
	e.fcm.setAnswer(func(m wireMessage) answer {
		if m.Token == "tok-c" {
			return answer{status: http.StatusOK}
		}
		return answer{status: 429, header: map[string]string{"Retry-After": "7"}, body: fcmError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded")}
	})
	// user-a: one device over quota and one that took it: still a
	// transient failure, so the retry reaches the other device.
	o := e.options(map[string][]string{"user-a": {"tok-a", "tok-c"}, "user-b": {"tok-b"}, "user-c": {"tok-c"}})
	o.OnInvalidToken = func(_ context.Context, _, _, token string, _ error) {
		t.Errorf("OnInvalidToken(%s) for a quota error", token)
	}
	err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("user-a", "m"), note("user-b", "m"), note("user-c", "m")})
	if got := delivery.RetryAfter(err); got != 7*time.Second {
		t.Errorf("RetryAfter(%v) = %v, want 7s", err, got)
	}
	errs := delivery.ItemErrors(err, 3)
	if errs[0] == nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("item errors %v, want user-a and user-b failed", errs)
	}
	for _, ie := range errs[:2] {
		if delivery.IsPermanent(ie) || delivery.RetryAfter(ie) != 7*time.Second {
			t.Errorf("%v: want transient with Retry-After 7s", ie)
		}
	}
}

// Test401 drops the rejected access token: the retry fetches a new one.
func Test401(t *testing.T) {
	e := newEnv(t)
	var rejected atomic.Bool
	e.fcm.setAnswer(func(wireMessage) answer {
		if rejected.CompareAndSwap(false, true) {
			return answer{status: 401, body: fcmError(401, "UNAUTHENTICATED", "", "Request had invalid authentication credentials.")}
		}
		return answer{status: http.StatusOK}
	})
	p := e.pusher(t, e.options(map[string][]string{"u": {"tok-u"}}))
	err := p.Push(t.Context(), []delivery.Notification{note("u", "m")})
	if err == nil || delivery.IsPermanent(err) {
		t.Fatalf("a 401: %v, want a transient error", err)
	}
	if err := p.Push(t.Context(), []delivery.Notification{note("u", "m")}); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if n := e.oauth.calls(); n != 2 {
		t.Errorf("%d access tokens issued, want 2 (a new one after the 401)", n)
	}
}

// TestHostFailures: Tokens and Badge errors fail their notifications,
// transiently unless they wrap delivery.ErrPermanent; nothing is sent.
func TestHostFailures(t *testing.T) {
	e := newEnv(t)
	boom := errors.New("directory down")
	o := e.options(nil)
	o.Tokens = fcm.TokensFunc(func(context.Context, string, []string) (map[string][]string, error) { return nil, boom })
	err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("a", "m"), note("b", "m")})
	if !errors.Is(err, boom) || delivery.IsPermanent(err) || !strings.Contains(err.Error(), "device tokens") {
		t.Errorf("Tokens failing: %v", err)
	}
	o.Tokens = fcm.TokensFunc(func(context.Context, string, []string) (map[string][]string, error) {
		return nil, delivery.Permanent(errors.New("app deleted"))
	})
	if err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("a", "m")}); !delivery.IsPermanent(err) {
		t.Errorf("Tokens failing permanently: %v", err)
	}
	o = e.options(map[string][]string{"a": {"tok-a"}, "b": {"tok-b"}})
	o.Badge = func(context.Context, string, string) (int, error) { return 0, boom }
	a := note("a", "m")
	a.Badge = true
	err = e.pusher(t, o).Push(t.Context(), []delivery.Notification{a, note("b", "m")})
	var pe *delivery.PartialError
	if !errors.As(err, &pe) || len(pe.Failed) != 1 || !errors.Is(pe.Failed[0], boom) || delivery.IsPermanent(pe.Failed[0]) {
		t.Errorf("Badge failing for a: %v", err)
	}
	if got := e.fcm.received(); len(got) != 1 || got[0].Token != "tok-b" {
		t.Errorf("received %+v, want only b's", got)
	}
}

func TestConcurrency(t *testing.T) {
	e := newEnv(t)
	var devices []string
	for i := range 30 {
		devices = append(devices, fmt.Sprintf("tok-%d", i))
	}
	o := e.options(map[string][]string{"u": devices})
	o.Concurrency = 3
	e.fcm.setAnswer(func(wireMessage) answer {
		time.Sleep(5 * time.Millisecond)
		return answer{status: http.StatusOK}
	})
	if err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("u", "m")}); err != nil {
		t.Fatal(err)
	}
	e.fcm.mu.Lock()
	defer e.fcm.mu.Unlock()
	if len(e.fcm.got) != 30 || e.fcm.maxFlight > 3 || e.fcm.maxFlight < 2 {
		t.Errorf("%d delivered, at most %d at once; want 30, at most 3 (and more than 1)", len(e.fcm.got), e.fcm.maxFlight)
	}
}

// TestOwnTransport: the default client — FCM's requests and the token
// endpoint's — has a transport of its own, not http.DefaultTransport,
// whose idle connections anything else in the program may close under a
// POST in flight (httptest.Server.Close does). Not parallel: it swaps
// http.DefaultTransport for one that fails every request.
func TestOwnTransport(t *testing.T) {
	e := newEnv(t)
	p := e.pusher(t, e.options(map[string][]string{"u": {"tok"}}))
	orig := http.DefaultTransport
	http.DefaultTransport = failingTransport{}
	defer func() { http.DefaultTransport = orig }()
	if err := p.Push(t.Context(), []delivery.Notification{note("u", "m")}); err != nil {
		t.Fatalf("the pusher's requests went through http.DefaultTransport: %v", err)
	}
	if got := e.fcm.received(); len(got) != 1 {
		t.Errorf("FCM received %d messages, want 1", len(got))
	}
}

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("http.DefaultTransport used")
}

// TestTimeout: a hanging FCM or token endpoint fails the call transiently
// within Timeout; a canceled context ends the wait at once.
func TestTimeout(t *testing.T) {
	t.Run("FCM", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.fcm.setAnswer(func(wireMessage) answer { return answer{hang: true} })
		o := e.options(map[string][]string{"u": {"tok-u"}})
		o.Timeout = 200 * time.Millisecond
		start := time.Now()
		err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("u", "m")})
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v with a 200ms timeout", d)
		}
		if err == nil || delivery.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 200ms") {
			t.Errorf("a hanging FCM: %v, want a transient timeout", err)
		}
	})
	t.Run("token endpoint", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.oauth.set(true, "")
		o := e.options(map[string][]string{"u": {"tok-u"}})
		o.Timeout = 200 * time.Millisecond
		start := time.Now()
		err := e.pusher(t, o).Push(t.Context(), []delivery.Notification{note("u", "m"), note("u", "n")})
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v with a 200ms timeout", d)
		}
		if err == nil || delivery.IsPermanent(err) || !strings.Contains(err.Error(), "access token") {
			t.Errorf("a hanging token endpoint: %v, want a transient error", err)
		}
		if len(e.fcm.received()) != 0 {
			t.Error("FCM got requests without an access token")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.oauth.set(true, "")
		p := e.pusher(t, e.options(map[string][]string{"u": {"tok-u"}}))
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Push(ctx, []delivery.Notification{note("u", "m")})
		if d := time.Since(start); d > 2*time.Second || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("after %v: %v, want the context's error at once", d, err)
		}
	})
}

// TestBadServiceAccount: New fails on a bad key, naming the file and the
// field, never a value of the key.
func TestBadServiceAccount(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	for _, c := range []struct {
		name string
		edit func(map[string]any)
		raw  string
		want string
	}{
		{"no private_key", func(m map[string]any) { delete(m, "private_key") }, "", `field "private_key": missing`},
		{"empty private_key", func(m map[string]any) { m["private_key"] = "" }, "", `field "private_key": empty`},
		{"private_key not PEM", func(m map[string]any) { m["private_key"] = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" }, "", `field "private_key": not a PEM-encoded private key`},
		{"private_key truncated", func(m map[string]any) {
			lines := strings.Split(keyPEM(), "\n") // whole lines: valid PEM, a DER cut short
			m["private_key"] = strings.Join(lines[:11], "\n") + "\n-----END PRIVATE KEY-----\n"
		}, "", `field "private_key": not a PKCS #8 or PKCS #1 RSA private key`},
		{"private_key EC", func(m map[string]any) { m["private_key"] = ecPEM }, "", `field "private_key": not an RSA key`},
		{"private_key a number", func(m map[string]any) { m["private_key"] = 42 }, "", `field "private_key": not a string`},
		{"no client_email", func(m map[string]any) { delete(m, "client_email") }, "", `field "client_email": missing`},
		{"no project_id", func(m map[string]any) { delete(m, "project_id") }, "", `field "project_id": missing`},
		{"wrong type", func(m map[string]any) { m["type"] = "authorized_user" }, "", `field "type": "authorized_user", want "service_account"`},
		{"bad token_uri", func(m map[string]any) { m["token_uri"] = "oauth2.googleapis.com/token" }, "", `field "token_uri": "oauth2.googleapis.com/token" is not an http(s) URL`},
		{"not JSON", nil, `{"type": "service_account", "private_key": "-----BEGIN`, "not valid JSON"},
		{"a JSON array", nil, `["service_account"]`, "not a JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(c.raw)
			if c.raw == "" {
				raw = serviceAccount("https://oauth2.googleapis.com/token", c.edit)
			}
			path := writeFile(t, "sa.json", raw)
			_, err := fcm.New(&fcm.Options{CredentialsFile: path, Tokens: staticTokens(nil)})
			if err == nil {
				t.Fatal("New accepted it")
			}
			if want := "fcm: service account " + path + ": " + c.want; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("New: %v\nwant it to start with %s", err, want)
			}
			checkNoSecret(t, err.Error(), "")
			_, err = fcm.New(&fcm.Options{Credentials: raw, Tokens: staticTokens(nil)})
			if want := "fcm: service account (Options.Credentials): " + c.want; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("New with Credentials: %v\nwant it to start with %s", err, want)
			}
		})
	}
	t.Run("no file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing.json")
		_, err := fcm.New(&fcm.Options{CredentialsFile: path, Tokens: staticTokens(nil)})
		if err == nil || err.Error() != "fcm: service account "+path+": no such file or directory" {
			t.Errorf("New: %v", err)
		}
	})
	t.Run("project given", func(t *testing.T) {
		raw := serviceAccount("https://oauth2.googleapis.com/token", func(m map[string]any) { delete(m, "project_id") })
		if _, err := fcm.New(&fcm.Options{Project: "p", Credentials: raw, Tokens: staticTokens(nil)}); err != nil {
			t.Errorf("a key without project_id and Options.Project: %v", err)
		}
	})
}

func TestOptions(t *testing.T) {
	raw := serviceAccount("https://oauth2.googleapis.com/token", nil)
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})
	for _, c := range []struct {
		o    *fcm.Options
		want string
	}{
		{nil, "Options are required"},
		{&fcm.Options{Tokens: staticTokens(nil)}, "exactly one of"},
		{&fcm.Options{Credentials: raw, TokenSource: ts, Tokens: staticTokens(nil)}, "exactly one of"},
		{&fcm.Options{Credentials: raw}, "Options.Tokens is required"},
		{&fcm.Options{TokenSource: ts, Tokens: staticTokens(nil)}, "Options.Project is required"},
		{&fcm.Options{Credentials: raw, Tokens: staticTokens(nil), Endpoint: "fcm.googleapis.com"}, "Options.Endpoint"},
	} {
		if _, err := fcm.New(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want %q", c.o, err, c.want)
		}
	}
}

// TestTokenSource: a host's token source, its token as the bearer.
func TestTokenSource(t *testing.T) {
	f := newFCMServer(t, func(auth string) bool { return auth == "Bearer host-token" })
	p, err := fcm.New(&fcm.Options{
		Project: project, TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "host-token"}),
		Endpoint: f.srv.URL + "/", Tokens: staticTokens(map[string][]string{"u": {"tok-u"}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Push(t.Context(), []delivery.Notification{note("u", "m")}); err != nil {
		t.Fatal(err)
	}
	if len(f.received()) != 1 {
		t.Errorf("received %d", len(f.received()))
	}
}

// TestNoSecrets: no error shows the private key, an access token or the
// signed assertion, whatever FCM and the token endpoint answer.
func TestNoSecrets(t *testing.T) {
	e := newEnv(t)
	var errs []error
	push := func(o *fcm.Options) {
		p := e.pusher(t, o)
		err := p.Push(t.Context(), []delivery.Notification{note("u", "m"), note("v", "m")})
		if err == nil {
			t.Fatal("no error")
		}
		errs = append(errs, err)
	}
	o := e.options(map[string][]string{"u": {"tok-u"}, "v": {"tok-v"}})
	o.OnInvalidToken = func(_ context.Context, _, _, _ string, reason error) { errs = append(errs, reason) }
	o.Concurrency = 1
	for _, a := range []answer{unregistered, badToken, unavailable, {status: 401, body: fcmError(401, "UNAUTHENTICATED", "", "Request had invalid authentication credentials.")},
		{status: 500, body: "internal\x00error\nAuthorization: Bearer leaked?"}, {hang: true}} {
		e.fcm.setAnswer(func(wireMessage) answer { return a })
		o.Timeout = 300 * time.Millisecond
		push(o)
	}
	// A token endpoint that rejects the grant and echoes the request.
	e.oauth.set(false, `{"error":"invalid_grant","error_description":"Invalid JWT Signature.","echo":"`+keyPEM()[30:90]+`"}`)
	push(e.options(map[string][]string{"u": {"tok-u"}, "v": {"tok-v"}}))
	if last := errs[len(errs)-1].Error(); !strings.Contains(last, "invalid_grant") || !strings.Contains(last, "Invalid JWT Signature.") {
		t.Errorf("a rejected grant: %s", last)
	}
	for _, err := range errs {
		for _, tok := range e.oauth.issuedTokens() {
			checkNoSecret(t, err.Error(), tok)
		}
	}
}

// checkNoSecret fails if s shows the private key (any 16 characters of
// its PEM body) or token.
func checkNoSecret(t *testing.T, s, token string) {
	t.Helper()
	if token != "" && strings.Contains(s, token) {
		t.Errorf("an error shows the access token: %s", s)
	}
	if strings.Contains(s, "PRIVATE KEY-----") {
		t.Errorf("an error shows the private key: %s", s)
	}
	body := strings.ReplaceAll(strings.Split(keyPEM(), "-----")[2], "\n", "")
	for i := 0; i+16 <= len(body); i += 8 {
		if strings.Contains(strings.ReplaceAll(s, "\\n", ""), body[i:i+16]) {
			t.Errorf("an error shows part of the private key: %s", s)
			return
		}
	}
	if bytes.Contains([]byte(s), []byte("eyJ")) { // a JWT's header
		t.Errorf("an error shows a JWT: %s", s)
	}
}
