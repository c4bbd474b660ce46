// Package fcm is a delivery.Pusher for Firebase Cloud Messaging (FCM)
// through its HTTP v1 API. FCM v1 has no batch endpoint, so a Push sends
// one request per notification and device,
//
//	POST {Endpoint}/v1/projects/{Project}/messages:send
//	Authorization: Bearer <OAuth 2.0 access token>
//	{"message":{"token":"<device token>",
//	            "notification":{"title":"<sender>","body":"<text>"},
//	            "data":{"appID":…,"messageID":…,"roomID":…,"sender":…,"type":…},
//	            "apns":{"payload":{"aps":{"badge":<n>}}}}}
//
// at most Options.Concurrency at a time. The content comes from
// Options.Render (DefaultRender above; data values are strings, and the
// messageID in them lets an app drop the duplicates that at-least-once
// delivery may bring). The users' device tokens come from the host, one
// [Tokens] call per Push and app; a user without tokens has nothing to
// push and succeeds.
//
// The access token is fetched with the JWT-bearer grant (RFC 7523) of a
// Google service account (Options.Credentials or CredentialsFile; its
// token_uri is honoured) and cached until shortly before it expires; a
// host with its own auth passes an oauth2.TokenSource instead.
//
// Outcomes, per notification (the index of the slice given to Push):
//
//   - A device token FCM calls invalid — errorCode UNREGISTERED (404), or
//     INVALID_ARGUMENT (400) about the token (a google.rpc.BadRequest on
//     message.token, or a message naming the registration token) — is
//     reported to Options.OnInvalidToken, so the host can prune it, and is
//     never retried. It does not fail the notification while another of
//     the user's devices took it; when every token of the user is invalid
//     the notification fails permanently with an error wrapping
//     delivery.ErrUnregistered. An INVALID_ARGUMENT about anything else (a
//     payload too big, a reserved data key) is a permanent failure and
//     prunes nothing: it would be the same for every token.
//   - QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500), any other
//     5xx, 408, connection errors and timeouts are transient: the
//     notification fails and the chunk is retried (a Retry-After, seconds
//     or an HTTP date, is carried: see delivery.RetryAfter). A transient
//     failure on one device fails the notification even when another
//     device took it, so a retry may notify that device again.
//   - 401 (UNAUTHENTICATED: the access token was rejected) is transient:
//     the cached access token is dropped, so the retry fetches a new one.
//     It is not retried inside the call.
//   - SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR (the APNs or web-push
//     credentials in the Firebase console), 403 PERMISSION_DENIED, 404
//     without UNREGISTERED (an unknown project) and other 4xx are
//     permanent: configuration that a retry within minutes will not fix.
//     They prune nothing.
//   - A failing Tokens or Badge call fails its notifications (transient
//     unless its error wraps delivery.ErrPermanent); a failing token
//     endpoint fails the whole call once, transiently.
//
// Push returns nil when every notification succeeded, a
// *delivery.PartialError when some failed, and one error (wrapping every
// failure) when all failed alike — all permanently or all transiently.
// Redirects are not followed (the bearer token goes to Endpoint only).
// No error or log names the private key or an access token; a device
// token appears in errors only as its last 8 characters.
package fcm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/chatbatch/chatbatch/delivery"
)

// Defaults of Options, and FCM's constants.
const (
	DefaultEndpoint    = "https://fcm.googleapis.com"
	DefaultTimeout     = 10 * time.Second
	DefaultConcurrency = 16
	// DefaultTokenURI is the token endpoint of a service account whose
	// JSON has no token_uri.
	DefaultTokenURI = "https://oauth2.googleapis.com/token"
	// Scope is the OAuth 2.0 scope FCM's send requires.
	Scope = "https://www.googleapis.com/auth/firebase.messaging"
	// MaxBodyBytes is the longest notification body DefaultRender makes;
	// a longer text is cut at a character boundary and ends with "…" (an
	// FCM message is at most 4096 bytes, and a notification shows a few
	// lines).
	MaxBodyBytes = 1024
)

// Tokens is the host's store of device tokens.
type Tokens interface {
	// Tokens returns the FCM registration tokens of each of userIDs of
	// app; a user with no tokens may be absent. It is called once per
	// Push and app, and must be safe for concurrent use.
	Tokens(ctx context.Context, app string, userIDs []string) (map[string][]string, error)
}

// TokensFunc adapts a function to Tokens.
type TokensFunc func(ctx context.Context, app string, userIDs []string) (map[string][]string, error)

// Tokens calls f.
func (f TokensFunc) Tokens(ctx context.Context, app string, userIDs []string) (map[string][]string, error) {
	return f(ctx, app, userIDs)
}

// Content is what one notification shows.
type Content struct {
	// Title and Body are the FCM notification's; both empty sends a
	// data-only message.
	Title string
	Body  string
	// Data is the message's data payload (FCM reserves the keys "from",
	// "notification", "message_type" and those starting with "google" or
	// "gcm").
	Data map[string]string
	// Android, when set, is sent as the message's android field (an FCM
	// AndroidConfig, JSON), as it is.
	Android json.RawMessage
}

// DefaultRender is the default Options.Render: the title is the sender,
// the body the text (at most MaxBodyBytes), and data holds appID,
// messageID, roomID, sender and type.
func DefaultRender(n delivery.Notification) Content {
	return Content{
		Title: n.Sender,
		Body:  clip(n.Text, MaxBodyBytes),
		Data: map[string]string{
			"appID": n.AppID, "messageID": n.MessageID, "roomID": n.RoomID, "sender": n.Sender, "type": n.Type,
		},
	}
}

// Options configure a Pusher. Exactly one of Credentials, CredentialsFile
// and TokenSource is required, and Tokens.
type Options struct {
	// Project is the Firebase project ID. Defaults to the service
	// account's project_id; required with TokenSource.
	Project string
	// Credentials is a service-account key, the JSON file Google's console
	// downloads (type "service_account", project_id, client_email,
	// private_key, private_key_id, token_uri).
	Credentials []byte
	// CredentialsFile is the path of that JSON file, read by New.
	CredentialsFile string
	// TokenSource gives the access tokens instead (a host with its own
	// auth, or tests); it must grant Scope. Its tokens are cached until
	// they expire or FCM rejects them (401).
	TokenSource oauth2.TokenSource
	// Endpoint is FCM's base URL. Defaults to DefaultEndpoint.
	Endpoint string
	// Tokens gives the users' device tokens. Required.
	Tokens Tokens
	// OnInvalidToken, when set, is told of each device token FCM calls
	// invalid (reason wraps delivery.ErrUnregistered and an *Error), so
	// the host can delete it. It is called before Push returns, possibly
	// from several goroutines at once, and again if the chunk is retried.
	OnInvalidToken func(ctx context.Context, app, user, token string, reason error)
	// Render makes a notification's content. Defaults to DefaultRender.
	Render func(n delivery.Notification) Content
	// Badge, when set, gives a user's badge count (total unread) for the
	// notifications whose Badge is true; it is sent as the APNs badge
	// (aps.badge), once looked up per user and Push. Unset, or for a
	// notification whose Badge is false, no badge is sent (Android
	// launchers count notifications themselves). An error fails that
	// user's notifications (transiently unless it wraps
	// delivery.ErrPermanent).
	Badge func(ctx context.Context, app, user string) (int, error)
	// Client sends the requests, to FCM and to the token endpoint.
	// Defaults to a new http.Client with a transport of its own (a clone
	// of http.DefaultTransport); redirects are never followed.
	Client *http.Client
	// Timeout bounds one request to FCM and one access-token fetch.
	// Defaults to DefaultTimeout.
	Timeout time.Duration
	// Concurrency is the most FCM requests one Push has in flight.
	// Defaults to DefaultConcurrency.
	Concurrency int
}

// Pusher pushes through FCM. It is safe for concurrent use.
type Pusher struct {
	url       string // the messages:send URL
	tokens    Tokens
	onInvalid func(ctx context.Context, app, user, token string, reason error)
	render    func(n delivery.Notification) Content
	badge     func(ctx context.Context, app, user string) (int, error)
	client    *http.Client
	timeout   time.Duration
	conc      int
	auth      *tokenCache
}

// New returns a Pusher for o. It reads and checks the credentials, but
// fetches no token: a bad service account fails here, naming the file (or
// Options.Credentials) and the field.
func New(o *Options) (*Pusher, error) {
	if o == nil {
		return nil, errors.New("fcm: Options are required (credentials and Tokens)")
	}
	set := 0
	for _, b := range []bool{len(o.Credentials) > 0, o.CredentialsFile != "", o.TokenSource != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return nil, errors.New("fcm: set exactly one of Options.Credentials, Options.CredentialsFile and Options.TokenSource")
	}
	if o.Tokens == nil {
		return nil, errors.New("fcm: Options.Tokens is required (the users' device tokens)")
	}
	p := &Pusher{
		tokens: o.Tokens, onInvalid: o.OnInvalidToken, render: o.Render, badge: o.Badge,
		timeout: o.Timeout, conc: o.Concurrency,
	}
	if p.render == nil {
		p.render = DefaultRender
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.conc <= 0 {
		p.conc = DefaultConcurrency
	}
	// A transport of its own, as the webhook adapter's: a call of
	// http.DefaultTransport.CloseIdleConnections elsewhere in the process
	// would otherwise break a send that had just picked an idle
	// connection (POSTs are not retried by the transport).
	var c http.Client
	if o.Client != nil {
		c = *o.Client
	} else if t, ok := http.DefaultTransport.(*http.Transport); ok {
		c.Transport = t.Clone()
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.client = &c

	project := o.Project
	var fetch func(ctx context.Context) (*oauth2.Token, error)
	if o.TokenSource != nil {
		ts := o.TokenSource
		fetch = func(context.Context) (*oauth2.Token, error) {
			t, err := ts.Token()
			if err != nil {
				return nil, fmt.Errorf("fcm: access token: %w", err)
			}
			return t, nil
		}
	} else {
		raw, name := o.Credentials, "(Options.Credentials)"
		if o.CredentialsFile != "" {
			name = o.CredentialsFile
			var err error
			if raw, err = os.ReadFile(o.CredentialsFile); err != nil {
				var pe *fs.PathError
				if errors.As(err, &pe) {
					err = pe.Err
				}
				return nil, fmt.Errorf("fcm: service account %s: %w", name, err)
			}
		}
		sa, err := parseServiceAccount(raw, project == "")
		if err != nil {
			return nil, fmt.Errorf("fcm: service account %s: %w", name, err)
		}
		if project == "" {
			project = sa.projectID
		}
		cfg := &jwt.Config{
			Email: sa.clientEmail, PrivateKey: []byte(sa.privateKey), PrivateKeyID: sa.privateKeyID,
			Scopes: []string{Scope}, TokenURL: sa.tokenURI,
		}
		// The JWT flow's request carries no context: the client's timeout
		// bounds it.
		tc := c
		if tc.Timeout <= 0 || tc.Timeout > p.timeout {
			tc.Timeout = p.timeout
		}
		fetch = func(ctx context.Context) (*oauth2.Token, error) {
			t, err := cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, &tc)).Token()
			if err != nil {
				return nil, tokenError(sa.tokenURI, err)
			}
			return t, nil
		}
	}
	if project == "" {
		return nil, errors.New("fcm: Options.Project is required with Options.TokenSource")
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("fcm: Options.Endpoint %q is not an http(s) base URL", endpoint)
	}
	p.url = strings.TrimRight(endpoint, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send"
	p.auth = &tokenCache{fetch: fetch, timeout: p.timeout}
	return p, nil
}

// serviceAccount is the part of a service-account key New uses.
type serviceAccount struct {
	projectID, clientEmail, privateKey, privateKeyID, tokenURI string
}

// parseServiceAccount checks a service-account key field by field; its
// errors name the field, never a value of the key.
func parseServiceAccount(raw []byte, needProject bool) (*serviceAccount, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		}
		return nil, errors.New("not a JSON object")
	}
	str := func(name string, required bool) (string, error) {
		v, ok := fields[name]
		if !ok || string(v) == "null" {
			if required {
				return "", fmt.Errorf("field %q: missing", name)
			}
			return "", nil
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", fmt.Errorf("field %q: not a string", name)
		}
		if required && strings.TrimSpace(s) == "" {
			return "", fmt.Errorf("field %q: empty", name)
		}
		return s, nil
	}
	typ, err := str("type", true)
	if err != nil {
		return nil, err
	}
	if typ != "service_account" {
		return nil, fmt.Errorf("field \"type\": %q, want \"service_account\"", clip(typ, 40))
	}
	sa := &serviceAccount{}
	if sa.projectID, err = str("project_id", needProject); err != nil {
		return nil, err
	}
	if sa.clientEmail, err = str("client_email", true); err != nil {
		return nil, err
	}
	if !strings.Contains(sa.clientEmail, "@") {
		return nil, fmt.Errorf("field \"client_email\": %q is not an e-mail address", clip(sa.clientEmail, 80))
	}
	if sa.privateKey, err = str("private_key", true); err != nil {
		return nil, err
	}
	if err := checkRSAKey(sa.privateKey); err != nil {
		return nil, fmt.Errorf("field \"private_key\": %w", err)
	}
	if sa.privateKeyID, err = str("private_key_id", false); err != nil {
		return nil, err
	}
	if sa.tokenURI, err = str("token_uri", false); err != nil {
		return nil, err
	}
	if sa.tokenURI == "" {
		sa.tokenURI = DefaultTokenURI
	}
	if u, err := url.Parse(sa.tokenURI); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("field \"token_uri\": %q is not an http(s) URL", clip(sa.tokenURI, 200))
	}
	return sa, nil
}

// checkRSAKey reports whether key is a PEM-encoded RSA private key, the
// way the JWT flow parses it; the error says nothing of the key.
func checkRSAKey(key string) error {
	block, _ := pem.Decode([]byte(key))
	if block == nil {
		return errors.New("not a PEM-encoded private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New("not a PKCS #8 or PKCS #1 RSA private key")
	}
	return nil
}

// tokenError describes a failed access-token fetch without the response
// body, which oauth2.RetrieveError would print.
func tokenError(tokenURI string, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("fcm: access token from %s: %w", redact(tokenURI), err)
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		var b struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &b) == nil {
			code, desc = b.Error, b.Description
		}
	}
	msg := fmt.Sprintf("fcm: access token from %s: answered", redact(tokenURI))
	if re.Response != nil {
		msg += fmt.Sprintf(" %d %s", re.Response.StatusCode, http.StatusText(re.Response.StatusCode))
	}
	if code != "" {
		msg += ": " + clean(code, 80)
	}
	if desc != "" {
		msg += " (" + clean(desc, 200) + ")"
	}
	return errors.New(msg)
}

// tokenCache holds the access token: one fetch at a time, shared by every
// caller waiting for it, each waiting only as long as its context allows.
type tokenCache struct {
	fetch   func(ctx context.Context) (*oauth2.Token, error)
	timeout time.Duration

	mu     sync.Mutex
	tok    *oauth2.Token
	flight *tokenFetch
}

type tokenFetch struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

func (c *tokenCache) get(ctx context.Context) (*oauth2.Token, error) {
	c.mu.Lock()
	if c.tok.Valid() {
		t := c.tok
		c.mu.Unlock()
		return t, nil
	}
	f := c.flight
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		c.flight = f
		go c.run(context.WithoutCancel(ctx), f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("fcm: waiting for an access token: %w", ctx.Err())
	}
}

func (c *tokenCache) run(ctx context.Context, f *tokenFetch) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tok, err := c.fetch(ctx)
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errors.New("fcm: access token: the token source gave none")
	}
	f.tok, f.err = tok, err
	c.mu.Lock()
	if err == nil {
		c.tok = tok
	}
	c.flight = nil
	c.mu.Unlock()
	close(f.done)
}

// invalidate drops tok (FCM rejected it), so the next get fetches anew.
func (c *tokenCache) invalidate(tok *oauth2.Token) {
	c.mu.Lock()
	if c.tok == tok {
		c.tok = nil
	}
	c.mu.Unlock()
}

// Error is an FCM error answer (see
// https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
type Error struct {
	// HTTPStatus is the answer's status code, such as 404.
	HTTPStatus int
	// Status is the google.rpc status, such as "NOT_FOUND".
	Status string
	// Code is the FcmError errorCode, such as "UNREGISTERED"; empty when
	// the answer had none.
	Code string
	// Message is FCM's message, shortened.
	Message string

	fields []string // the fields of google.rpc.BadRequest violations
}

func (e *Error) Error() string {
	s := "FCM answered " + strconv.Itoa(e.HTTPStatus)
	switch {
	case e.Code != "":
		s += " " + e.Code
	case e.Status != "":
		s += " " + e.Status
	default:
		s += " " + http.StatusText(e.HTTPStatus)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// aboutToken reports whether an INVALID_ARGUMENT is about the device
// token rather than the payload.
func (e *Error) aboutToken() bool {
	return slices.Contains(e.fields, "message.token") || strings.Contains(strings.ToLower(e.Message), "registration token")
}

func parseError(status int, raw []byte) *Error {
	e := &Error{HTTPStatus: status}
	var body struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type            string `json:"@type"`
				ErrorCode       string `json:"errorCode"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) != nil {
		return e
	}
	e.Status, e.Message = clean(body.Error.Status, 40), clean(body.Error.Message, 200)
	for _, d := range body.Error.Details {
		switch {
		case strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "":
			e.Code = clean(d.ErrorCode, 40)
		case strings.HasSuffix(d.Type, "google.rpc.BadRequest"):
			for _, v := range d.FieldViolations {
				e.fields = append(e.fields, v.Field)
			}
		}
	}
	return e
}

// kind is what one send came to.
type kind int

const (
	sent kind = iota
	invalidToken
	transient
	permanent
)

func classify(e *Error) kind {
	switch {
	case e.Code == "UNREGISTERED":
		return invalidToken
	case e.HTTPStatus == http.StatusBadRequest || e.Code == "INVALID_ARGUMENT" || e.Status == "INVALID_ARGUMENT":
		if e.aboutToken() {
			return invalidToken
		}
		return permanent
	case e.Code == "SENDER_ID_MISMATCH" || e.Code == "THIRD_PARTY_AUTH_ERROR":
		return permanent
	case e.Code == "QUOTA_EXCEEDED" || e.Code == "UNAVAILABLE" || e.Code == "INTERNAL",
		e.HTTPStatus == http.StatusUnauthorized || e.Status == "UNAUTHENTICATED",
		e.HTTPStatus == http.StatusRequestTimeout || e.HTTPStatus == http.StatusTooManyRequests || e.HTTPStatus >= 500:
		return transient
	default:
		return permanent
	}
}

// unregisteredError is an invalid device token: it wraps the FCM error
// and delivery.ErrUnregistered.
type unregisteredError struct{ err error }

func (e *unregisteredError) Error() string   { return e.err.Error() }
func (e *unregisteredError) Unwrap() []error { return []error{e.err, delivery.ErrUnregistered} }

type outcome struct {
	kind kind
	err  error
}

// request is the body of messages:send.
type request struct {
	Message message `json:"message"`
}

type message struct {
	Token        string            `json:"token"`
	Notification *notification     `json:"notification,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
	Android      json.RawMessage   `json:"android,omitempty"`
	APNS         *apnsConfig       `json:"apns,omitempty"`
}

type notification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type apnsConfig struct {
	Payload struct {
		APS struct {
			Badge int `json:"badge"`
		} `json:"aps"`
	} `json:"payload"`
}

// Push implements delivery.Pusher; see the package documentation for the
// outcomes.
func (p *Pusher) Push(ctx context.Context, ns []delivery.Notification) error {
	if len(ns) == 0 {
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fcm: %w", err)
	}
	failed := make([]error, len(ns)) // failures before any send
	devices := make([][]string, len(ns))

	// Device tokens: one call per app (a chunk is one app).
	byApp := map[string][]int{}
	for i, n := range ns {
		byApp[n.AppID] = append(byApp[n.AppID], i)
	}
	for _, app := range slices.Sorted(maps.Keys(byApp)) {
		idx := byApp[app]
		var users []string
		seen := map[string]bool{}
		for _, i := range idx {
			if u := ns[i].UserID; !seen[u] {
				seen[u] = true
				users = append(users, u)
			}
		}
		m, err := p.tokens.Tokens(ctx, app, users)
		if err != nil {
			err = fmt.Errorf("fcm: device tokens of app %q: %w", app, err)
			for _, i := range idx {
				failed[i] = err
			}
			continue
		}
		for _, i := range idx {
			devices[i] = distinct(m[ns[i].UserID])
		}
	}
	pending := func(i int) bool { return failed[i] == nil && len(devices[i]) > 0 }

	// The access token, once up front: a failing token endpoint fails the
	// call once, not once per device.
	if anyIndex(len(ns), pending) {
		if _, err := p.auth.get(ctx); err != nil {
			for i := range ns {
				if pending(i) {
					failed[i] = err
				}
			}
		}
	}

	// Badges, once per user.
	badges := make([]*int, len(ns))
	if p.badge != nil {
		type key struct{ app, user string }
		var keys []key
		at := map[key]int{}
		for i, n := range ns {
			k := key{n.AppID, n.UserID}
			if _, ok := at[k]; !ok && n.Badge && pending(i) {
				at[k] = len(keys)
				keys = append(keys, k)
			}
		}
		counts, errs := make([]int, len(keys)), make([]error, len(keys))
		parallel(len(keys), p.conc, func(j int) {
			if err := ctx.Err(); err != nil {
				errs[j] = fmt.Errorf("fcm: %w", err)
				return
			}
			counts[j], errs[j] = p.badge(ctx, keys[j].app, keys[j].user)
		})
		for i, n := range ns {
			j, ok := at[key{n.AppID, n.UserID}]
			if !ok || !n.Badge || !pending(i) {
				continue
			}
			if errs[j] != nil {
				failed[i] = fmt.Errorf("fcm: badge of user %q: %w", n.UserID, errs[j])
				continue
			}
			badges[i] = &counts[j]
		}
	}

	// One request per notification and device.
	type job struct{ n, d int }
	var jobs []job
	contents := make([]Content, len(ns))
	outcomes := make([][]outcome, len(ns))
	for i, n := range ns {
		if !pending(i) {
			continue
		}
		contents[i] = p.render(n)
		outcomes[i] = make([]outcome, len(devices[i]))
		for d := range devices[i] {
			jobs = append(jobs, job{i, d})
		}
	}
	parallel(len(jobs), p.conc, func(k int) {
		j := jobs[k]
		outcomes[j.n][j.d] = p.send(ctx, &ns[j.n], &contents[j.n], badges[j.n], devices[j.n][j.d])
	})

	errs := map[int]error{}
	for i, n := range ns {
		if failed[i] != nil {
			errs[i] = failed[i]
			continue
		}
		if err := settle(n.UserID, outcomes[i]); err != nil {
			errs[i] = err
		}
	}
	return result(errs, len(ns))
}

func anyIndex(n int, f func(int) bool) bool {
	for i := range n {
		if f(i) {
			return true
		}
	}
	return false
}

// settle makes one notification's outcome of its devices' outcomes.
func settle(user string, outs []outcome) error {
	var trans, firstInvalid, firstPerm error
	delivered, invalid := 0, 0
	for _, o := range outs {
		switch o.kind {
		case sent:
			delivered++
		case invalidToken:
			invalid++
			if firstInvalid == nil {
				firstInvalid = o.err
			}
		case transient:
			if trans == nil || delivery.RetryAfter(o.err) > delivery.RetryAfter(trans) {
				trans = o.err
			}
		case permanent:
			if firstPerm == nil {
				firstPerm = o.err
			}
		}
	}
	switch {
	case trans != nil:
		return trans
	case delivered > 0 || len(outs) == 0:
		return nil
	case invalid == len(outs):
		return fmt.Errorf("fcm: user %q: every device token (%d) is invalid: %w", user, invalid, firstInvalid)
	default:
		return firstPerm
	}
}

// result is Push's error for the failed indexes errs of n notifications.
func result(errs map[int]error, n int) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) < n {
		return &delivery.PartialError{Failed: errs}
	}
	first, same, perm := errs[0], true, 0
	for _, e := range errs {
		same = same && e == first
		if delivery.IsPermanent(e) {
			perm++
		}
	}
	switch {
	case same:
		return first
	case perm == n || perm == 0:
		return &allFailed{errs: errs}
	default:
		// Some permanent, some not: per index, so the permanent ones are
		// recorded and the others retried.
		return &delivery.PartialError{Failed: errs}
	}
}

// allFailed is every notification of a call failing, all permanently or
// all transiently: errors.Is and delivery.RetryAfter see every failure.
type allFailed struct{ errs map[int]error }

func (e *allFailed) Error() string {
	idx := slices.Sorted(maps.Keys(e.errs))
	var b strings.Builder
	fmt.Fprintf(&b, "fcm: all %d notifications failed", len(idx))
	for i, k := range idx {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(idx)-3)
			break
		}
		fmt.Fprintf(&b, "; [%d]: %v", k, e.errs[k])
	}
	return b.String()
}

func (e *allFailed) Unwrap() []error {
	out := make([]error, 0, len(e.errs))
	for _, k := range slices.Sorted(maps.Keys(e.errs)) {
		out = append(out, e.errs[k])
	}
	return out
}

// send pushes one notification to one device.
func (p *Pusher) send(ctx context.Context, n *delivery.Notification, c *Content, badge *int, device string) outcome {
	where := fmt.Sprintf("fcm: user %q, device …%s", n.UserID, suffix(device))
	if err := ctx.Err(); err != nil {
		return outcome{transient, fmt.Errorf("%s: %w", where, err)}
	}
	m := message{Token: device, Data: c.Data, Android: c.Android}
	if c.Title != "" || c.Body != "" {
		m.Notification = &notification{Title: c.Title, Body: c.Body}
	}
	if badge != nil {
		m.APNS = &apnsConfig{}
		m.APNS.Payload.APS.Badge = max(0, *badge)
	}
	body, err := json.Marshal(request{Message: m})
	if err != nil {
		return outcome{permanent, delivery.Permanent(fmt.Errorf("%s: encoding the message: %w", where, err))}
	}
	tok, err := p.auth.get(ctx)
	if err != nil {
		return outcome{transient, err}
	}
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return outcome{permanent, delivery.Permanent(fmt.Errorf("%s: %w", where, err))}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	tok.SetAuthHeader(req)
	res, err := p.client.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("%s: %w", where, ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("%s: POST %s: no answer within %v: %w", where, p.url, p.timeout, context.DeadlineExceeded)
		default:
			err = fmt.Errorf("%s: POST %s: %w", where, p.url, unwrapURLError(err))
		}
		return outcome{transient, err}
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return outcome{kind: sent}
	}
	fe := parseError(res.StatusCode, raw)
	switch k := classify(fe); k {
	case invalidToken:
		reason := &unregisteredError{fmt.Errorf("%s: %w", where, fe)}
		if p.onInvalid != nil {
			p.onInvalid(ctx, n.AppID, n.UserID, device, reason)
		}
		return outcome{k, reason}
	case transient:
		err := fmt.Errorf("%s: %w", where, fe)
		if fe.HTTPStatus == http.StatusUnauthorized || fe.Status == "UNAUTHENTICATED" {
			// The access token was rejected: the next attempt fetches a
			// new one.
			p.auth.invalidate(tok)
			err = fmt.Errorf("%s: %w (the access token was rejected; the retry fetches a new one)", where, fe)
		}
		if d := retryAfter(res.Header.Get("Retry-After")); d > 0 {
			err = delivery.WithRetryAfter(err, d)
		}
		return outcome{k, err}
	default:
		return outcome{k, delivery.Permanent(fmt.Errorf("%s: %w", where, fe))}
	}
}

// parallel calls fn(0) … fn(n-1) from at most workers goroutines.
func parallel(n, workers int, fn func(i int)) {
	if n == 0 {
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

func distinct(tokens []string) []string {
	var out []string
	for _, t := range tokens {
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// suffix is the last 8 characters of a device token, enough to find it.
func suffix(token string) string {
	if len(token) <= 8 {
		return token
	}
	return token[len(token)-8:]
}

// clip cuts s to at most n bytes at a character boundary, ending with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// clean is clip for text from the other side: no control characters.
func clean(s string, n int) string {
	return clip(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s), n)
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the token endpoint"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
