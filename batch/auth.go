package batch

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/chatbatch/chatbatch/store"
)

// Principal is who a request acts for, as established from its API key
// or by the host's own authentication (Config.AuthenticateRequest).
type Principal struct {
	// AppID scopes everything the request sees and creates.
	AppID string
	// Admin principals may name a sender and see every batch of the app.
	Admin bool
	// UserID, for a principal that is not Admin, is the user the request
	// acts as — a user signed in to the host's own app, as IMKit's web
	// and Vue UIs call the endpoint: the batch is sent as that user (a
	// request naming a sender is refused with 403), and the user sees,
	// cancels and recalls only the batches it created (store.Batch's
	// CreatedBy), never an operator's, whatever their sender. Without it
	// a non-admin principal sends as Config.DefaultSender and, like an
	// admin, sees every batch of the app.
	UserID string
	// MaxRecipients, when positive, is the most paras one request of this
	// principal may have (below Config.MaxRecipients): per-key or per-user
	// limits of the host's plans.
	MaxRecipients int
}

// ownerOnly reports whether p is a user principal: it sees only the
// batches it created.
func (p Principal) ownerOnly() bool { return !p.Admin && p.UserID != "" }

// creator is what a batch p creates records as its CreatedBy: the user
// of a user principal, "" for an operator.
func (p Principal) creator() string {
	if p.ownerOnly() {
		return p.UserID
	}
	return ""
}

// owns reports whether p may see and control batch b: an operator any
// batch of its app, a user principal the batches it created.
func (p Principal) owns(b *store.Batch) bool { return !p.ownerOnly() || b.CreatedBy == p.UserID }

// ErrNoCredentials is returned by a Config.AuthenticateRequest hook for a
// request that carries none of the host's credentials: the handler then
// tries the IM-API-KEY header (when Config.Authenticator is set).
var ErrNoCredentials = errors.New("batch: no credentials")

// ErrUnauthenticated is returned (wrapped) by a Config.AuthenticateRequest
// hook for credentials it refuses (a bad signature, an expired session):
// the handler answers 401 UNAUTHORIZED. Any other error is taken as the
// authenticator being unavailable (503).
var ErrUnauthenticated = errors.New("batch: unauthenticated")

type principalKey struct{}

// ContextWithPrincipal returns ctx carrying p, for a host middleware that
// authenticated the request itself; PrincipalFromRequest, set as
// Config.AuthenticateRequest, hands it to the handler.
func ContextWithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFromRequest is a Config.AuthenticateRequest for hosts whose
// middleware authenticates requests and puts the principal in the
// request's context with ContextWithPrincipal. A request without one has
// no credentials (ErrNoCredentials).
func PrincipalFromRequest(r *http.Request) (Principal, error) {
	if p, ok := r.Context().Value(principalKey{}).(Principal); ok {
		return p, nil
	}
	return Principal{}, ErrNoCredentials
}

// ErrInvalidAPIKey is returned by an Authenticator for a key it does not
// know; the handler answers 401 INVALID_API_KEY. Any other error is taken
// as the authenticator being unavailable (503).
var ErrInvalidAPIKey = errors.New("batch: invalid API key")

// Authenticator maps the IM-API-KEY header to a Principal.
type Authenticator interface {
	// Authenticate returns the principal of key, or an error wrapping
	// ErrInvalidAPIKey if key is unknown, expired or empty. It must be safe
	// for concurrent use and should compare keys in constant time.
	Authenticate(ctx context.Context, key string) (Principal, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, key string) (Principal, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, key string) (Principal, error) {
	return f(ctx, key)
}

// StaticKeys is an Authenticator over a fixed set of keys. It keeps only
// SHA-256 digests of the keys and compares digests in constant time,
// checking every key on each call, so neither the keys nor which one
// matched leak through timing.
type StaticKeys struct {
	entries []keyEntry
}

type keyEntry struct {
	digest [sha256.Size]byte
	p      Principal
}

// NewStaticKeys returns a StaticKeys for the given key → principal map.
func NewStaticKeys(keys map[string]Principal) *StaticKeys {
	s := &StaticKeys{}
	for k, p := range keys {
		if k == "" {
			continue // an empty key would authenticate requests without one
		}
		s.entries = append(s.entries, keyEntry{sha256.Sum256([]byte(k)), p})
	}
	return s
}

// Authenticate implements Authenticator.
func (s *StaticKeys) Authenticate(_ context.Context, key string) (Principal, error) {
	d := sha256.Sum256([]byte(key))
	var found Principal
	ok := 0
	for _, e := range s.entries {
		if subtle.ConstantTimeCompare(d[:], e.digest[:]) == 1 {
			found = e.p
			ok = 1
		}
	}
	if ok == 0 || key == "" {
		return Principal{}, ErrInvalidAPIKey
	}
	return found, nil
}
