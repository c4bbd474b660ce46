package batch

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
)

// Principal is who a request acts for, as established from its API key.
type Principal struct {
	// AppID scopes everything the request sees and creates.
	AppID string
	// Admin keys may name a sender; others send as Config.DefaultSender.
	Admin bool
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
