package batch

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Handler returns the HTTP handler of the API. Mount it at Config.BasePath
// and below, for example with net/http (or call Mount):
//
//	mux.Handle("/messages/batch", h)
//	mux.Handle("/messages/batch/", h)
//
// It routes by the request's whole path, so routers mount it the same
// way: chi with Mount, gin and echo with a route for BasePath and a
// wildcard route below it. Under a prefix, set Config.BasePath to the
// whole path, or strip the prefix (docs/embedding.md shows each).
//
// It serves POST BasePath (send a batch; ?dryRun=true to check and
// preview only), GET BasePath (the app's batches; with ?batchID= the
// messages of one batch, when the Messages store implements
// store.MessageReader), GET BasePath/{batchID} (the batch's status), GET
// BasePath/{batchID}/recipients (per-recipient outcomes), DELETE
// BasePath/{batchID} (cancel the batch) and POST
// BasePath/{batchID}/recall (cancel and take back what was sent, when
// the Messages store implements store.MessageDeleter and the Deliverer
// delivery.Retractor), POST BasePath/{batchID}/pause and …/resume
// (hold back the chunks not started, and let them go again); to admin principals GET BasePath/-/queue (the
// queue's health, QueueStats) and POST
// BasePath/-/queue/tasks/{taskID}/run (RunQueueTask; both need
// Config.Redis); and answers everything else with the API's error
// envelope (405 for other methods, 404 for other paths).
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Mount registers Handler on mux for Config.BasePath and everything below it.
func (s *Service) Mount(mux *http.ServeMux) {
	h := s.Handler()
	mux.Handle(s.cfg.BasePath, h)
	mux.Handle(s.cfg.BasePath+"/", h)
}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "batch: handler panic", "panic", v, "stack", string(debug.Stack()))
			writeError(w, errInternal)
		}
	}()
	if err := s.cfg.CrossOriginProtection.Check(r); err != nil {
		// Refused before authentication: a cross-site page may make the
		// browser send the host's session cookie, so nothing may depend
		// on it.
		writeError(w, newError(http.StatusForbidden, CodeCrossOrigin,
			"a %s from another origin is refused: the API changes state only for requests from its own origin, trusted origins and clients outside a browser", r.Method))
		return
	}
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		// r.URL.Query() drops what it cannot decode, which would answer
		// ?limit=%zz as if it had no limit.
		writeError(w, newError(http.StatusBadRequest, CodeInvalidParameter, "the query string is malformed: %v", err).
			with(Detail{Reason: "malformed percent-encoding or separator"}))
		return
	}
	rel := strings.TrimPrefix(r.URL.Path, s.cfg.BasePath)
	if rel == "" || rel == "/" {
		switch r.Method {
		case http.MethodPost:
			s.withPrincipal(w, r, s.handleSend)
		case http.MethodGet, http.MethodHead:
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
			defer cancel()
			s.withPrincipal(w, r.WithContext(ctx), s.handleList)
		default:
			methodNotAllowed(w, r, "GET, HEAD, POST")
		}
		return
	}
	id, sub, _ := strings.Cut(strings.TrimPrefix(rel, "/"), "/")
	// The store work of these requests starts at once: bound it all.
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	switch {
	case id == "-" && sub == readsPath:
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, "POST")
			return
		}
		s.withPrincipal(w, r, s.handleReads)
	case id == "-":
		// QueuePath: no batch ID is "-".
		s.handleQueue(w, r, sub)
	case id == "" || (sub != "" && sub != "recipients" && sub != "recall" && sub != "pause" && sub != "resume"):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	case !plausibleID(id):
		// No batch ID holds a NUL or invalid UTF-8 (batch IDs are ours);
		// asking the store would only provoke a driver error.
		writeError(w, errBatchNotFound(id))
	case sub == "recipients":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, r, "GET, HEAD")
			return
		}
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleRecipients(w, r, p, id)
		})
	case sub == "recall":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, "POST")
			return
		}
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleRecall(w, r, p, id)
		})
	case sub == "pause" || sub == "resume":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, "POST")
			return
		}
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handlePause(w, r, p, id, sub == "pause")
		})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleStatus(w, r, p, id)
		})
	case r.Method == http.MethodDelete:
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleCancel(w, r, p, id)
		})
	default:
		methodNotAllowed(w, r, "GET, HEAD, DELETE")
	}
}

// authenticate establishes the request's principal.
func (s *Service) authenticate(r *http.Request) (Principal, *apiError) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	if s.cfg.AuthenticateRequest != nil {
		p, err := s.cfg.AuthenticateRequest(r.WithContext(ctx))
		switch {
		case err == nil:
			return p, nil
		case errors.Is(err, ErrUnauthenticated):
			return Principal{}, newError(http.StatusUnauthorized, CodeUnauthorized, "the request's credentials were refused")
		case !errors.Is(err, ErrNoCredentials):
			return Principal{}, s.storeError(r.Context(), "authenticate", err)
		case s.cfg.Authenticator == nil:
			return Principal{}, newError(http.StatusUnauthorized, CodeUnauthorized, "the request carries no credentials")
		}
	}
	key := r.Header.Get("IM-API-KEY")
	if key == "" {
		// IMKit's deprecated name, which its JS SDK still sends.
		key = r.Header.Get("API_KEY")
	}
	if key == "" {
		return Principal{}, newError(http.StatusUnauthorized, CodeInvalidAPIKey, "the IM-API-KEY header is missing")
	}
	p, err := s.cfg.Authenticator.Authenticate(ctx, key)
	switch {
	case errors.Is(err, ErrInvalidAPIKey):
		return Principal{}, newError(http.StatusUnauthorized, CodeInvalidAPIKey, "the IM-API-KEY header is not a valid API key")
	case err != nil:
		return Principal{}, s.storeError(r.Context(), "authenticate", err)
	}
	return p, nil
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed here; use %s", r.Method, allow))
}

// withPrincipal authenticates the request and calls next (see
// Authenticate).
func (s *Service) withPrincipal(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request, Principal)) {
	if p, ok := s.Authenticate(w, r); ok {
		next(w, r, p)
	}
}

// Authenticate does for a request what the batch handler does before it
// acts: it authenticates r — by the host's own means first
// (Config.AuthenticateRequest), then by the IM-API-KEY header (or IMKit's
// deprecated API_KEY) through Config.Authenticator — and counts it
// against its app's request rate (Config.RateLimit), setting the
// X-RateLimit-* headers. It returns the principal, or false after
// answering r with the API's error envelope: 401, 429 with Retry-After,
// or 503 when the authenticator cannot tell. A host calls it from its own
// endpoints that should share the API's credentials and rate limit.
func (s *Service) Authenticate(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	p, aerr := s.authenticate(r)
	if aerr != nil {
		writeError(w, aerr)
		return Principal{}, false
	}
	if p.AppID == "" {
		s.log.ErrorContext(r.Context(), "batch: the authenticator returned a principal without an AppID")
		writeError(w, errInternal)
		return Principal{}, false
	}
	if !s.limitRequest(w, r, p) { // Config.RateLimit: 429 before anything is stored
		return Principal{}, false
	}
	return p, true
}

// checkContentType accepts application/json with no charset or UTF-8.
func checkContentType(r *http.Request) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	if ct == "" {
		ct = "none"
	}
	return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType,
		"Content-Type %q is not supported; send application/json; charset=utf-8", ct)
}

// storeError maps an error of the store (or the authenticator) to the
// API: 503 UNAVAILABLE with Retry-After. ctx is the request's context: a
// request the client canceled is logged as such, one that ran out of
// Config.StoreTimeout as a store that did not answer.
func (s *Service) storeError(ctx context.Context, op string, err error) *apiError {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		s.log.InfoContext(ctx, "batch: request canceled by the client", "op", op)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		s.log.ErrorContext(ctx, "batch: the store did not answer within Config.StoreTimeout", "op", op, "timeout", s.cfg.StoreTimeout, "err", err)
	default:
		s.log.ErrorContext(ctx, "batch: store failed", "op", op, "err", err)
	}
	return errUnavailable
}

// plausibleID reports whether id could name something we stored: every
// ID the API accepts is valid UTF-8 without NUL.
func plausibleID(id string) bool {
	return utf8.ValidString(id) && strings.IndexByte(id, 0) < 0
}

func errBatchNotFound(id string) *apiError {
	return newError(http.StatusNotFound, CodeBatchNotFound, "batch %q does not exist", id)
}

// queryParams checks that q has only the allowed keys, each once.
func queryParams(q url.Values, allowed ...string) *apiError {
	for k, v := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			if len(allowed) == 0 {
				return newError(http.StatusBadRequest, CodeInvalidParameter, "unknown query parameter %q; this endpoint takes none", k).with(Detail{Field: k, Reason: "unknown query parameter"})
			}
			return newError(http.StatusBadRequest, CodeInvalidParameter, "unknown query parameter %q; this endpoint takes %v", k, allowed).with(Detail{Field: k, Reason: "unknown query parameter"})
		}
		if len(v) > 1 {
			return newError(http.StatusBadRequest, CodeInvalidParameter, "query parameter %q is given %d times", k, len(v)).with(Detail{Field: k, Reason: "given more than once"})
		}
	}
	return nil
}

func paramError(name, format string, args ...any) *apiError {
	reason := fmt.Sprintf(format, args...)
	return newError(http.StatusBadRequest, CodeInvalidParameter, "%s: %s", name, reason).with(Detail{Field: name, Reason: reason})
}

// intParam parses an optional non-negative integer parameter; above max it is capped.
func intParam(q url.Values, name string, def, lo, max int) (int, *apiError) {
	v := q.Get(name)
	if v == "" {
		if q.Has(name) {
			return 0, paramError(name, "is empty; give a number or leave it out")
		}
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, paramError(name, "%q is not a whole number of at least %d", v, lo)
	}
	return min(n, max), nil
}

func boolParam(q url.Values, name string) (bool, *apiError) {
	v := q.Get(name)
	if v == "" && !q.Has(name) {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, paramError(name, "%q is not true or false", v)
	}
	return b, nil
}
