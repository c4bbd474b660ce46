package chat

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Authentication errors.
var (
	ErrNoCredentials  = errors.New("chat: no credentials")
	ErrBadCredentials = errors.New("chat: invalid credentials")
)

// AdminKeyHeader carries the operators' key.
const AdminKeyHeader = "X-Admin-Key"

// WebSocketProtocol is the websocket subprotocol of the chat server;
// browsers, which cannot set headers on a websocket, offer the session as
// a second one, "bearer.<token>".
const WebSocketProtocol = "chat.v1"

// Sessions issues and verifies the chat server's session tokens:
// base64url(JSON claims) "." base64url(HMAC-SHA256 of the first part).
type Sessions struct {
	Secret []byte
	TTL    time.Duration // default 24 h
	Now    func() time.Time
}

type claims struct {
	Sub    int64  `json:"sub"`
	Handle string `json:"handle"`
	Exp    int64  `json:"exp"`
}

func (s *Sessions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sessions) sign(part string) string {
	m := hmac.New(sha256.New, s.Secret)
	m.Write([]byte(part))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Issue returns a session token for a.
func (s *Sessions) Issue(a Account) string {
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	b, _ := json.Marshal(claims{Sub: a.ID, Handle: a.Handle, Exp: s.now().Add(ttl).Unix()})
	part := base64.RawURLEncoding.EncodeToString(b)
	return part + "." + s.sign(part)
}

// Verify returns the account a token was issued for.
func (s *Sessions) Verify(token string) (Account, error) {
	part, sig, ok := strings.Cut(token, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(part))) {
		return Account{}, ErrBadCredentials
	}
	b, err := base64.RawURLEncoding.DecodeString(part)
	var c claims
	if err != nil || json.Unmarshal(b, &c) != nil || c.Sub == 0 {
		return Account{}, ErrBadCredentials
	}
	if s.now().Unix() >= c.Exp {
		return Account{}, ErrBadCredentials
	}
	return Account{ID: c.Sub, Handle: c.Handle}, nil
}

// Identity is who a request comes from: an operator (the admin key) or
// a signed-in account.
type Identity struct {
	Admin   bool
	Account Account
}

// Auth authenticates requests: "Authorization: Bearer <session>" or the
// admin key header.
type Auth struct {
	Sessions *Sessions
	AdminKey string
}

// Identify returns the request's identity, ErrNoCredentials when it
// carries none, ErrBadCredentials when they are wrong.
func (a *Auth) Identify(r *http.Request) (Identity, error) {
	if key := r.Header.Get(AdminKeyHeader); key != "" {
		if a.AdminKey == "" || subtle.ConstantTimeCompare([]byte(key), []byte(a.AdminKey)) != 1 {
			return Identity{}, ErrBadCredentials
		}
		return Identity{Admin: true}, nil
	}
	token, ok := bearer(r)
	if !ok {
		return Identity{}, ErrNoCredentials
	}
	acc, err := a.Sessions.Verify(token)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Account: acc}, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// webSocketToken finds the session of a websocket handshake: the
// Authorization header, or a "bearer.<token>" subprotocol. Never the URL,
// which ends up in logs.
func webSocketToken(r *http.Request) (string, bool) {
	if t, ok := bearer(r); ok {
		return t, true
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), "bearer."); ok && t != "" {
				return t, true
			}
		}
	}
	return "", false
}

type identityKey struct{}

// IdentityFrom returns the identity the server's middleware found.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
