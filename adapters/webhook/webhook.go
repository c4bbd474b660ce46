// Package webhook delivers a batch's messages (a Deliverer) and push
// notifications (a Pusher) to the host by HTTP POST, signed per the
// Standard Webhooks specification (https://www.standardwebhooks.com):
//
//	webhook-id:        msg_<hash of the messages' IDs>  (stable across retries)
//	webhook-timestamp: <Unix seconds>
//	webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> …
//
// Secrets are written whsec_<base64>; several may be given at once (the
// request is signed with each, so a receiver can rotate). The body of a
// Deliverer request is
//
//	{"type":"messages","timestamp":"…","data":[<delivery.MessageJSON>…]}
//
// of a recall's retraction {"type":"retraction",…} with the recalled
// messages (no text), and of a Pusher request
// {"type":"push","timestamp":"…","data":[<delivery.Notification>…]};
// a chunk is split into several requests at Options.MaxItems or
// Options.MaxBodyBytes.
//
// Answers: a 2xx delivers every item of the request, unless its body is
// {"failed":[{"id":"<message ID>","error":"…","permanent":true}]}, which
// fails those items (permanently or not). 400, 401, 403, 404, 410, 413
// and 422 fail the request's items permanently (delivery.ErrPermanent, the
// status in the error); 408, 425, 429, 5xx, timeouts and connection errors
// are transient (the chunk is retried; a Retry-After is carried in the
// error, see delivery.RetryAfter). A redirect to another host is not
// followed and is permanent. The secret never appears in an error.
//
// Receivers check requests with [Verify].
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// Defaults of Options.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxItems     = 500
	DefaultMaxBodyBytes = 1 << 20
)

// Options configure a Deliverer or Pusher.
type Options struct {
	// URL is where the requests go. Required.
	URL string
	// Secrets sign every request, each written whsec_<base64>; at least
	// one is required. Several sign with each (key rotation).
	Secrets []string
	// Timeout bounds one request. Defaults to DefaultTimeout.
	Timeout time.Duration
	// MaxItems is the most messages or notifications in one request.
	// Defaults to DefaultMaxItems.
	MaxItems int
	// MaxBodyBytes is the largest request body; a chunk whose JSON is
	// larger is split. Defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int
	// Client sends the requests. Defaults to a client with a transport of
	// its own (a clone of http.DefaultTransport, when that is an
	// *http.Transport) and no redirects to other hosts; a given client gets
	// the same redirect rule.
	Client *http.Client
	// Now returns the current time (the signature's timestamp). Defaults
	// to time.Now.
	Now func() time.Time
}

type poster struct {
	url      string
	keys     [][]byte
	timeout  time.Duration
	maxItems int
	maxBody  int
	client   *http.Client
	now      func() time.Time
}

func newPoster(o *Options) (*poster, error) {
	if o == nil {
		return nil, errors.New("webhook: Options are required (URL and Secrets)")
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: Options.URL %q is not an http(s) URL", o.URL)
	}
	if len(o.Secrets) == 0 {
		return nil, errors.New("webhook: Options.Secrets: at least one secret (whsec_…) is required")
	}
	p := &poster{url: o.URL, timeout: o.Timeout, maxItems: o.MaxItems, maxBody: o.MaxBodyBytes, now: o.Now}
	for i, s := range o.Secrets {
		k, err := DecodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("webhook: Options.Secrets[%d]: %w", i, err)
		}
		p.keys = append(p.keys, k)
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.maxItems <= 0 {
		p.maxItems = DefaultMaxItems
	}
	if p.maxBody <= 0 {
		p.maxBody = DefaultMaxBodyBytes
	}
	if p.now == nil {
		p.now = time.Now
	}
	// A transport of its own: whatever else in the process calls
	// http.DefaultTransport.CloseIdleConnections (httptest.Server.Close
	// does) would otherwise break a POST that had just picked an idle
	// connection, and the transport retries no POST.
	var c http.Client
	if o.Client != nil {
		c = *o.Client
	} else if t, ok := http.DefaultTransport.(*http.Transport); ok {
		c.Transport = t.Clone()
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && req.URL.Host != via[0].URL.Host {
			return http.ErrUseLastResponse
		}
		if len(via) >= 5 {
			return http.ErrUseLastResponse
		}
		return nil
	}
	p.client = &c
	return p, nil
}

// DecodeSecret decodes a whsec_<base64> secret.
func DecodeSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New("the secret does not start with whsec_")
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(k) == 0 {
		return nil, errors.New("the secret after whsec_ is not base64")
	}
	return k, nil
}

// Sign returns the webhook-signature header value for body: one v1
// signature per key, space-separated.
func sign(keys [][]byte, id string, ts int64, body []byte) string {
	var sigs []string
	for _, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}

// ErrVerify is returned (wrapped) by Verify for a request that is not
// signed by any of the secrets or is too old or too new.
var ErrVerify = errors.New("webhook: verification failed")

// Verify checks a received request: header holds webhook-id,
// webhook-timestamp and webhook-signature, body is the raw body. It
// accepts when one v1 signature matches one of secrets (whsec_…) and the
// timestamp is within tolerance of now (5 minutes when tolerance is 0).
func Verify(secrets []string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	id, tsText, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return fmt.Errorf("%w: a webhook-id, webhook-timestamp or webhook-signature header is missing", ErrVerify)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp %q is not Unix seconds", ErrVerify, tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: webhook-timestamp is %v away from now", ErrVerify, d.Round(time.Second))
	}
	for _, s := range secrets {
		k, err := DecodeSecret(s)
		if err != nil {
			return fmt.Errorf("webhook: Verify: %w", err)
		}
		want := sign([][]byte{k}, id, ts, body)
		for _, got := range strings.Fields(sigs) {
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: no signature matches", ErrVerify)
}

// envelope is a request body.
type envelope struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// answer is the optional body of a 2xx answer.
type answer struct {
	Failed []struct {
		ID        string `json:"id"`
		Error     string `json:"error"`
		Permanent bool   `json:"permanent"`
	} `json:"failed"`
}

// send posts items (already JSON each) in requests of at most maxItems
// and maxBody bytes, and returns the per-item errors as a
// delivery.PartialError when some failed.
func (p *poster) send(ctx context.Context, kind string, items []json.RawMessage, ids []string) error {
	errs := map[int]error{}
	for start := 0; start < len(items); {
		end, size := start, 64
		for end < len(items) && end-start < p.maxItems && (end == start || size+len(items[end])+1 <= p.maxBody) {
			size += len(items[end]) + 1
			end++
		}
		reqErrs := p.post(ctx, kind, items[start:end], ids[start:end])
		for i, e := range reqErrs {
			if e != nil {
				errs[start+i] = e
			}
		}
		if ctx.Err() != nil {
			for i := end; i < len(items); i++ {
				errs[i] = ctx.Err()
			}
			break
		}
		start = end
	}
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == len(items) {
		// One failure for all (one request, or each failing alike): the
		// error itself, so that errors.Is sees what it wraps.
		first := errs[0]
		same := true
		for _, e := range errs {
			same = same && e == first
		}
		if same {
			return first
		}
	}
	return &delivery.PartialError{Failed: errs}
}

// post sends one request and returns one error per item (nil: delivered).
func (p *poster) post(ctx context.Context, kind string, items []json.RawMessage, ids []string) []error {
	all := func(err error) []error {
		out := make([]error, len(items))
		for i := range out {
			out[i] = err
		}
		return out
	}
	now := p.now()
	data := []byte{'['}
	for i, it := range items {
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, it...)
	}
	data = append(data, ']')
	body, err := json.Marshal(envelope{Type: kind, Timestamp: now.UTC(), Data: data})
	if err != nil {
		return all(delivery.Permanent(fmt.Errorf("webhook: encode: %w", err)))
	}
	h := sha256.Sum256([]byte(kind + "\x00" + strings.Join(ids, "\x00")))
	id := "msg_" + hex.EncodeToString(h[:16])
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return all(delivery.Permanent(fmt.Errorf("webhook: %w", err)))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sign(p.keys, id, now.Unix(), body))
	res, err := p.client.Do(req)
	if err != nil {
		// Transport errors (connection refused, timeout) are transient;
		// the error names the URL's host, never a header.
		return all(fmt.Errorf("webhook: POST %s: %w", redactURL(p.url), unwrapURLError(err)))
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	switch s := res.StatusCode; {
	case s >= 200 && s < 300:
		var a answer
		if len(bytes.TrimSpace(raw)) == 0 || json.Unmarshal(raw, &a) != nil || len(a.Failed) == 0 {
			return make([]error, len(items))
		}
		out := make([]error, len(items))
		for _, f := range a.Failed {
			for i, mid := range ids {
				if mid == f.ID {
					e := fmt.Errorf("webhook: the receiver failed it: %s", f.Error)
					if f.Permanent {
						e = delivery.Permanent(e)
					}
					out[i] = e
				}
			}
		}
		return out
	case s >= 300 && s < 400:
		return all(delivery.Permanent(fmt.Errorf("webhook: POST %s answered %d, a redirect to %q, not followed", redactURL(p.url), s, res.Header.Get("Location"))))
	case s == 400, s == 401, s == 403, s == 404, s == 410, s == 413, s == 422:
		return all(delivery.Permanent(fmt.Errorf("webhook: POST %s answered %d %s", redactURL(p.url), s, http.StatusText(s))))
	default:
		err := fmt.Errorf("webhook: POST %s answered %d %s", redactURL(p.url), s, http.StatusText(s))
		if d := retryAfter(res.Header.Get("Retry-After"), p.now()); d > 0 {
			err = delivery.WithRetryAfter(err, d)
		}
		return all(err)
	}
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now)
	}
	return 0
}

// redactURL drops the user info and query of u (tokens live there).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the webhook URL"
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

// Deliverer POSTs messages. It is safe for concurrent use.
type Deliverer struct{ p *poster }

// NewDeliverer returns a Deliverer for o.
func NewDeliverer(o *Options) (*Deliverer, error) {
	p, err := newPoster(o)
	if err != nil {
		return nil, err
	}
	return &Deliverer{p: p}, nil
}

// Deliver implements delivery.Deliverer.
func (d *Deliverer) Deliver(ctx context.Context, msgs []store.Message) error {
	return d.send(ctx, "messages", msgs)
}

// send POSTs msgs as requests of type kind.
func (d *Deliverer) send(ctx context.Context, kind string, msgs []store.Message) error {
	if len(msgs) == 0 {
		return ctx.Err()
	}
	items, ids := make([]json.RawMessage, len(msgs)), make([]string, len(msgs))
	for i, m := range msgs {
		b, err := json.Marshal(delivery.NewMessageJSON(m))
		if err != nil {
			return delivery.Permanent(fmt.Errorf("webhook: %s %s: %w", kind, m.ID, err))
		}
		items[i], ids[i] = b, m.ID
	}
	return d.p.send(ctx, kind, items, ids)
}

var _ delivery.Retractor = (*Deliverer)(nil)

// Retract implements delivery.Retractor: the recalled messages (IDs and
// routing, no text) POSTed as {"type":"retraction","data":[…]}, answered
// like a delivery. Its webhook-id differs from the delivery's.
func (d *Deliverer) Retract(ctx context.Context, msgs []store.Message) error {
	return d.send(ctx, "retraction", msgs)
}

// Pusher POSTs push notifications. It is safe for concurrent use.
type Pusher struct{ p *poster }

// NewPusher returns a Pusher for o.
func NewPusher(o *Options) (*Pusher, error) {
	p, err := newPoster(o)
	if err != nil {
		return nil, err
	}
	return &Pusher{p: p}, nil
}

// Push implements delivery.Pusher. A receiver's failed list names
// notifications by "<messageID>/<userID>".
func (p *Pusher) Push(ctx context.Context, ns []delivery.Notification) error {
	if len(ns) == 0 {
		return ctx.Err()
	}
	items, ids := make([]json.RawMessage, len(ns)), make([]string, len(ns))
	for i, n := range ns {
		b, err := json.Marshal(n)
		if err != nil {
			return delivery.Permanent(fmt.Errorf("webhook: notification %s: %w", n.MessageID, err))
		}
		items[i], ids[i] = b, n.MessageID+"/"+n.UserID
	}
	return p.p.send(ctx, "push", items, ids)
}
