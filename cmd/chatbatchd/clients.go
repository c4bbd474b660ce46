package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/batch"
)

// IMKit's client authentication, so that IMKit's own UIs (its web and Vue
// SDKs' mass-texting modal) can call POST /messages/batch, GET /rooms and
// GET /rooms/{id} as the signed-in user:
//
//	POST   /admin/clients {"_id", "issueAccessToken": true}   issue a token
//	POST   /admin/clients {"_id", "token", "expirationDate"}  bind one of yours
//	DELETE /admin/clients/{id}/token {"token"?}                revoke one, or all
//
// A request with IM-CLIENT-KEY (the server's -client-key) and
// IM-Authorization (a token) acts as the token's user: a batch.Principal
// with the user's ID and not Admin, so the batch API sends as that user
// and shows it only the batches it created.
//
// Tokens live in a table of chatbatchd's own (chatbatchd_tokens, created on
// first use like the admin calls' tables), not in a signed token: an
// operator then has no signing key to generate, share between API
// processes and rotate; a token can be revoked (IMKit's DELETE …/token) and
// a host can bind a token of its own (IMKit's "Assign Token"), neither of
// which a stateless token allows. The cost is one primary-key read per
// request that carries a token. Only a token's SHA-256 is stored, so the
// table does not hand out working tokens; an issued token is 32 random
// bytes (256 bits, base64url) and expires after -token-ttl.

const (
	tokensTable    = "chatbatchd_tokens"
	tokenBytes     = 32   // of an issued token, before base64url
	minTokenLength = 16   // bytes of a token a host binds
	maxTokenLength = 1024 // bytes of a token a host binds
)

// clientTokenInput is the token part of a POST /admin/clients: nil when
// the request asks for none.
type clientTokenInput struct {
	issue      bool       // issueAccessToken: true
	token      string     // a token of the host's (issueAccessToken false or absent)
	expiration *time.Time // its expirationDate, if given
}

// readClientToken reads issueAccessToken, token and expirationDate.
func readClientToken(obj map[string]json.RawMessage) (*clientTokenInput, *badField) {
	var in clientTokenInput
	if present(obj, "issueAccessToken") {
		if err := json.Unmarshal(obj["issueAccessToken"], &in.issue); err != nil {
			return nil, invalid("issueAccessToken", string(obj["issueAccessToken"]), "must be true or false")
		}
	}
	tok, bad := stringField(obj, "token", "token", maxTokenLength)
	if bad != nil {
		return nil, bad
	}
	exp, bad := stringField(obj, "expirationDate", "expirationDate", 64)
	if bad != nil {
		return nil, bad
	}
	switch {
	case in.issue && tok != nil:
		return nil, invalid("token", "", "a token of your own is bound with issueAccessToken false or absent, not with true")
	case in.issue && exp != nil:
		return nil, invalid("expirationDate", *exp, "an issued token's expiration is the server's (-token-ttl); set it only for a token of your own")
	case tok == nil && exp != nil:
		return nil, invalid("expirationDate", *exp, "is the expiration of a token of your own: send token too")
	case tok != nil:
		if len(*tok) < minTokenLength || strings.ContainsFunc(*tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return nil, invalid("token", "", fmt.Sprintf("must be %d to %d bytes of printable ASCII without spaces (it travels in the IM-Authorization header)", minTokenLength, maxTokenLength))
		}
		in.token = *tok
	}
	if exp != nil {
		t, err := time.Parse(time.RFC3339Nano, *exp)
		if err != nil {
			return nil, invalid("expirationDate", *exp, "must be an ISO 8601 time such as 2026-12-31T23:59:59.000Z")
		}
		if !t.After(time.Now()) {
			return nil, invalid("expirationDate", *exp, "is in the past")
		}
		in.expiration = &t
	}
	if !in.issue && in.token == "" {
		return nil, nil
	}
	return &in, nil
}

// clientWithToken is POST /admin/clients' answer: the user, and the
// token it asked for with its expirationDate (ISO 8601, UTC, milliseconds,
// as IMKit writes it). An issued token is shown this once.
type clientWithToken struct {
	client
	Token          string `json:"token,omitempty"`
	ExpirationDate string `json:"expirationDate,omitempty"`
}

func isoMillis(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// errTokenTaken is bindToken's answer for a token bound to another user.
var errTokenTaken = errors.New("the token is bound to another user")

func tokenDigest(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

// saveToken issues a token for user (in.issue) or binds the host's, and
// returns it with its expiration. A user's expired tokens are deleted
// then, so that the table holds about what is valid.
func (a *admin) saveToken(ctx context.Context, app, user string, in *clientTokenInput) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(a.s.o.tokenTTL)
	if in.expiration != nil {
		exp = *in.expiration
	}
	if _, err := a.s.db.ExecContext(ctx, "DELETE FROM "+tokensTable+" WHERE app_id = ? AND user_id = ? AND expires_at <= ?", app, user, now.UnixMilli()); err != nil {
		return "", time.Time{}, err
	}
	token := in.token
	if in.issue {
		b := make([]byte, tokenBytes)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		token = base64.RawURLEncoding.EncodeToString(b)
	}
	digest := tokenDigest(token)
	res, err := a.s.db.ExecContext(ctx, a.insertIgnore(tokensTable, "digest, app_id, user_id, expires_at", "(?, ?, ?, ?)"), digest, app, user, exp.UnixMilli())
	if err != nil {
		return "", time.Time{}, err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		// The host binds a token again: the same user's gets the new
		// expiration; another user's (or app's) is not taken over.
		res, err := a.s.db.ExecContext(ctx, "UPDATE "+tokensTable+" SET expires_at = ? WHERE digest = ? AND app_id = ? AND user_id = ?", exp.UnixMilli(), digest, app, user)
		if err != nil {
			return "", time.Time{}, err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return "", time.Time{}, errTokenTaken
		}
	}
	return token, exp, nil
}

// revokeTokens is IMKit's DELETE /admin/clients/{id}/token: the token of
// the body, or every token of the user without one.
func (a *admin) revokeTokens(w http.ResponseWriter, r *http.Request, app string) {
	user := r.PathValue("clientID")
	if bad := checkIDValue("clientID", user); bad != nil {
		bad.write(w)
		return
	}
	var token *string
	if r.ContentLength != 0 { // a body is optional: none revokes every token
		obj := readObject(w, r)
		if obj == nil {
			return
		}
		var bad *badField
		if token, bad = stringField(obj, "token", "token", maxTokenLength); bad != nil {
			bad.write(w)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if err := a.migrate(ctx); err != nil {
		a.s.storeErr(w, r, "revoke tokens", err)
		return
	}
	q, args := "DELETE FROM "+tokensTable+" WHERE app_id = ? AND user_id = ?", []any{app, user}
	msg := "All tokens revoked successfully"
	if token != nil {
		q, args = q+" AND digest = ?", append(args, tokenDigest(*token))
		msg = "Token revoked successfully"
	}
	res, err := a.s.db.ExecContext(ctx, q, args...)
	if err != nil {
		a.s.storeErr(w, r, "revoke tokens", err)
		return
	}
	n, _ := res.RowsAffected()
	writeResult(w, map[string]any{"success": true, "message": msg, "revokedTokens": n})
}

// tokenUser returns the user whose unexpired token of app token is, or ""
// when it is none.
func (a *admin) tokenUser(ctx context.Context, app, token string) (string, error) {
	if err := a.migrate(ctx); err != nil {
		return "", err
	}
	var user string
	err := a.s.db.QueryRowContext(ctx, "SELECT user_id FROM "+tokensTable+" WHERE digest = ? AND app_id = ? AND expires_at > ?",
		tokenDigest(token), app, time.Now().UnixMilli()).Scan(&user)
	if isNoRows(err) {
		return "", nil
	}
	return user, err
}

// tokensDDL is the tokens table: the token's SHA-256 (hex) as its key, the
// app and user, and when it expires (Unix milliseconds: one integer type
// on every database, compared with the clock of the process).
func (a *admin) tokensDDL(id, suffix string) []string {
	create := "CREATE TABLE IF NOT EXISTS " + tokensTable + " (digest " + id + " NOT NULL PRIMARY KEY, app_id " + id + " NOT NULL, " +
		"user_id " + id + " NOT NULL, expires_at BIGINT NOT NULL"
	index := "app_id, user_id, expires_at"
	if a.s.db.Dialect().Name() == dialect.MySQL {
		// MySQL has no CREATE INDEX IF NOT EXISTS: declared in the table.
		return []string{create + ", INDEX " + tokensTable + "_user (" + index + "))" + suffix}
	}
	return []string{create + ")" + suffix, "CREATE INDEX IF NOT EXISTS " + tokensTable + "_user ON " + tokensTable + " (" + index + ")"}
}

// clientAuth authenticates the requests that carry IMKit's client
// headers, IM-CLIENT-KEY and IM-Authorization, before any handler: one
// whose key and token are good goes on with the token's user as its
// principal in its context (batch.PrincipalFromRequest, which the batch
// API and chatbatchd's own endpoints read); any other is answered 401
// here, saying what is wrong. Requests without them go on untouched (to
// be authenticated by IM-API-KEY).
func (s *server) clientAuth(next http.Handler) http.Handler {
	var keyDigest [sha256.Size]byte
	if s.o.clientKey != "" {
		keyDigest = sha256.Sum256([]byte(s.o.clientKey))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, token := r.Header.Get("IM-CLIENT-KEY"), r.Header.Get("IM-Authorization")
		if key == "" && token == "" {
			next.ServeHTTP(w, r)
			return
		}
		refuse := func(msg string) {
			adminErr(w, http.StatusUnauthorized, batch.CodeUnauthorized, msg)
		}
		d := sha256.Sum256([]byte(key))
		switch {
		case s.o.clientKey == "":
			refuse("this server takes no client tokens: its operator has set no client key (-client-key); use IM-API-KEY")
			return
		case key == "":
			refuse("the IM-CLIENT-KEY header is missing: a client token (IM-Authorization) goes with the server's client key")
			return
		case subtle.ConstantTimeCompare(d[:], keyDigest[:]) != 1:
			refuse("the IM-CLIENT-KEY header is not this server's client key")
			return
		case token == "":
			refuse("the IM-Authorization header is missing: send the user's token (POST /admin/clients with issueAccessToken issues one)")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.o.storeTimeout)
		defer cancel()
		user, err := s.admin.tokenUser(ctx, s.o.app, strings.TrimPrefix(token, "Bearer "))
		if err != nil {
			s.storeErr(w, r, "authenticate", err)
			return
		}
		if user == "" {
			refuse("the IM-Authorization token is unknown, revoked or expired; get a new one with POST /admin/clients and issueAccessToken")
			return
		}
		next.ServeHTTP(w, r.WithContext(batch.ContextWithPrincipal(r.Context(), batch.Principal{AppID: s.o.app, UserID: user})))
	})
}
