package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/internal/jsonfields"
	"github.com/chatbatch/chatbatch/store"
)

// IMKit's admin calls, so that an IMKit client (or IMKit's own Postman
// collection) can set a chatbatchd up end to end: users with their
// profiles, rooms, and the room's messages read back.
//
//	POST /admin/clients                 create or update one user
//	POST /admin/clients/list            create or update many users
//	GET  /admin/clients?limit&skip      list the users
//	POST /rooms/                        create a room
//	GET  /rooms/{id}/messages/v3?limit  a room's messages, newest first
//
// Users, rooms and members go through bunstore (AddUsers, AddRoom,
// DirectRoom), so the batch API sees them at once. What IMKit keeps beside
// them and bunstore does not (a user's nickname and avatarUrl, a room's
// name and roomType) lives in two tables of chatbatchd's own, created on
// first use on the same database: the library's schema is not changed.
//
// Every call needs the server's IM-API-KEY, like its other endpoints, and
// answers in IMKit's envelope. Anything else is answered by notFound: the
// JSON 404 (or 405) envelope, never Go's text "404 page not found".

// Limits of the admin calls.
const (
	adminMaxBody     = 1 << 20 // bytes of a request body
	adminMaxUsers    = 1000    // users in one POST /admin/clients/list
	adminMaxMembers  = 10000   // members of one new room
	adminMaxText     = 1024    // bytes of a nickname or a room name
	adminMaxURL      = 2048    // bytes of an avatarUrl
	clientsLimitDef  = 50      // GET /admin/clients: IMKit's default and maximum
	clientsLimitMax  = 100
	messagesLimitDef = 20 // GET /rooms/{id}/messages/v3: IMKit's default
	messagesLimitMax = 500
	profilesTable    = "chatbatchd_profiles"
	roomInfoTable    = "chatbatchd_room_info"
	roomTypeGroup    = "group"
	roomTypeDirect   = "direct"
	codeRoomExists   = "ROOM_ALREADY_EXISTS"
	codeTokenTaken   = "TOKEN_IN_USE"
)

// admin serves the admin calls of one server.
type admin struct {
	s *server

	mu       sync.Mutex
	migrated bool
}

func newAdmin(s *server) *admin { return &admin{s: s} }

// routes registers the admin calls and the catch-all on mux.
func (a *admin) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/clients", a.s.authed(a.upsertClient))
	mux.HandleFunc("POST /admin/clients/list", a.s.authed(a.upsertClients))
	mux.HandleFunc("GET /admin/clients", a.s.authed(a.listClients))
	mux.HandleFunc("DELETE /admin/clients/{clientID}/token", a.s.authed(a.revokeTokens))
	mux.HandleFunc("POST /rooms/{$}", a.s.authed(a.createRoom))
	mux.HandleFunc("POST /rooms", a.s.authed(a.createRoom))
	mux.HandleFunc("GET /rooms/{roomID}/messages/v3", a.s.authedAny(a.roomMessagesV3))
	mux.HandleFunc("GET /rooms", a.s.authedAny(a.listRooms))
	mux.HandleFunc("GET /rooms/{$}", a.s.authedAny(a.listRooms))
	mux.HandleFunc("GET /rooms/{roomID}", a.s.authedAny(a.getRoom))
	mux.Handle("/", notFound(mux))
}

// notFound answers what no route matches with the API's envelope: 405
// METHOD_NOT_ALLOWED, with Allow, when the path has routes for other
// methods, else 404 NOT_FOUND.
func notFound(mux *http.ServeMux) http.Handler {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			adminErr(w, http.StatusMethodNotAllowed, batch.CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		adminErr(w, http.StatusNotFound, batch.CodeNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// adminErr writes IMKit's error envelope; details name the fields.
func adminErr(w http.ResponseWriter, status int, code, msg string, details ...batch.Detail) {
	if details == nil {
		details = []batch.Detail{}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	type body struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details []batch.Detail `json:"details"`
	}
	_ = json.NewEncoder(w).Encode(struct {
		RC    int    `json:"RC"`
		RM    string `json:"RM"`
		Error body   `json:"error"`
	}{status, http.StatusText(status), body{code, msg, details}})
}

// badField is a 400 about one field of the request.
type badField struct {
	code, field, value, reason string
}

func (e *badField) Error() string { return e.field + ": " + e.reason }

func (e *badField) write(w http.ResponseWriter) {
	adminErr(w, http.StatusBadRequest, e.code, e.field+": "+e.reason, batch.Detail{Field: e.field, Value: e.value, Reason: e.reason})
}

func missing(field string) *badField {
	return &badField{code: batch.CodeMissingParameter, field: field, reason: "is required"}
}

func invalid(field, value, reason string) *badField {
	if len(value) > 300 {
		value = value[:300] + "…"
	}
	return &badField{code: batch.CodeInvalidParameter, field: field, value: value, reason: reason}
}

// readObject reads a JSON object body into its fields. It writes the
// error response and returns nil on failure.
func readObject(w http.ResponseWriter, r *http.Request) map[string]json.RawMessage {
	// As the batch API: application/json, with no charset or UTF-8.
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if cs, ok := params["charset"]; err != nil || mt != "application/json" || (ok && !strings.EqualFold(cs, "utf-8")) {
		if ct == "" {
			ct = "none"
		}
		adminErr(w, http.StatusUnsupportedMediaType, batch.CodeUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported; send application/json; charset=utf-8", ct))
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, adminMaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			adminErr(w, http.StatusRequestEntityTooLarge, batch.CodePayloadTooLarge, fmt.Sprintf("the body is larger than %d bytes", adminMaxBody))
		} else {
			adminErr(w, http.StatusBadRequest, batch.CodeInvalidBody, "the body could not be read")
		}
		return nil
	}
	// encoding/json would read invalid UTF-8 (and an escaped lone
	// surrogate) as U+FFFD and keep the last of duplicate keys; refuse
	// them as the batch API does, so that nothing is stored altered.
	if !utf8.Valid(body) {
		adminErr(w, http.StatusBadRequest, batch.CodeInvalidBody, "the body is not valid UTF-8")
		return nil
	}
	if !jsontext.Value(body).IsValid() {
		adminErr(w, http.StatusBadRequest, batch.CodeInvalidBody, "the body is not valid JSON, or it has a duplicate key or an escaped lone surrogate (\\ud800–\\udfff)")
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		adminErr(w, http.StatusBadRequest, batch.CodeInvalidBody, "the body is not a JSON object")
		return nil
	}
	return obj
}

// present reports whether obj has key with a value other than null.
func present(obj map[string]json.RawMessage, key string) bool {
	v, ok := obj[key]
	return ok && string(v) != "null"
}

// stringField reads an optional string field: nil when absent or null.
func stringField(obj map[string]json.RawMessage, key, path string, maxLen int) (*string, *badField) {
	if !present(obj, key) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(obj[key], &s); err != nil {
		return nil, invalid(path, string(obj[key]), "must be a string")
	}
	switch {
	case len(s) > maxLen:
		return nil, invalid(path, s, fmt.Sprintf("is longer than %d bytes", maxLen))
	case strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s):
		return nil, invalid(path, s, "contains a NUL byte or invalid UTF-8")
	}
	return &s, nil
}

// idField reads a user or room ID: what the batch API accepts as one.
func idField(obj map[string]json.RawMessage, key, path string) (string, *badField) {
	if !present(obj, key) {
		return "", missing(path)
	}
	var s string
	if err := json.Unmarshal(obj[key], &s); err != nil {
		return "", invalid(path, string(obj[key]), "must be a string")
	}
	return s, checkIDValue(path, s)
}

// checkIDValue applies the batch API's rule for IDs, so that every user
// and room created here can be addressed by POST /messages/batch.
func checkIDValue(path, s string) *badField {
	switch {
	case s == "":
		return &badField{code: batch.CodeMissingParameter, field: path, reason: "must not be empty"}
	case len(s) > batch.DefaultMaxIDLength:
		return invalid(path, s, fmt.Sprintf("is %d bytes; at most %d", len(s), batch.DefaultMaxIDLength))
	case !utf8.ValidString(s) || strings.TrimSpace(s) != s || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return invalid(path, s, "must not have leading or trailing spaces, control characters or invalid UTF-8")
	}
	return nil
}

// client is a user as IMKit's admin calls show it.
type client struct {
	ID        string `json:"_id"`
	Nickname  string `json:"nickname"`
	AvatarURL string `json:"avatarUrl"`
}

// clientInput is one user of a request: nil fields are left as they are.
type clientInput struct {
	id                  string
	nickname, avatarURL *string
}

func readClient(obj map[string]json.RawMessage, prefix string) (clientInput, *badField) {
	var c clientInput
	var bad *badField
	if c.id, bad = idField(obj, "_id", prefix+"_id"); bad != nil {
		return c, bad
	}
	if c.nickname, bad = stringField(obj, "nickname", prefix+"nickname", adminMaxText); bad != nil {
		return c, bad
	}
	c.avatarURL, bad = stringField(obj, "avatarUrl", prefix+"avatarUrl", adminMaxURL)
	return c, bad
}

func (a *admin) upsertClient(w http.ResponseWriter, r *http.Request, app string) {
	obj := readObject(w, r)
	if obj == nil {
		return
	}
	in, bad := readClient(obj, "")
	if bad != nil {
		bad.write(w)
		return
	}
	tok, bad := readClientToken(obj)
	if bad != nil {
		bad.write(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if err := a.saveClients(ctx, app, []clientInput{in}); err != nil {
		a.s.storeErr(w, r, "create user", err)
		return
	}
	got, err := a.profiles(ctx, app, []string{in.id})
	if err != nil {
		a.s.storeErr(w, r, "create user", err)
		return
	}
	out := clientWithToken{client: got[in.id]}
	if tok != nil {
		token, exp, err := a.saveToken(ctx, app, in.id, tok)
		if errors.Is(err, errTokenTaken) {
			adminErr(w, http.StatusConflict, codeTokenTaken, "token: "+err.Error(), batch.Detail{Field: "token", Reason: err.Error()})
			return
		}
		if err != nil {
			a.s.storeErr(w, r, "issue token", err)
			return
		}
		out.ExpirationDate = isoMillis(exp)
		if tok.issue {
			out.Token = token
		}
	}
	writeResult(w, out)
}

func (a *admin) upsertClients(w http.ResponseWriter, r *http.Request, app string) {
	obj := readObject(w, r)
	if obj == nil {
		return
	}
	if !present(obj, "data") {
		missing("data").write(w)
		return
	}
	var items []json.RawMessage
	if err := json.Unmarshal(obj["data"], &items); err != nil {
		invalid("data", string(obj["data"]), "must be an array of users").write(w)
		return
	}
	if len(items) == 0 {
		(&badField{code: batch.CodeMissingParameter, field: "data", reason: "must hold at least one user"}).write(w)
		return
	}
	if len(items) > adminMaxUsers {
		invalid("data", "", fmt.Sprintf("holds %d users; at most %d a request", len(items), adminMaxUsers)).write(w)
		return
	}
	ins := make([]clientInput, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		path := fmt.Sprintf("data[%d]", i)
		var item map[string]json.RawMessage
		if err := json.Unmarshal(raw, &item); err != nil || item == nil {
			invalid(path, string(raw), "must be an object {_id, nickname, avatarUrl}").write(w)
			return
		}
		in, bad := readClient(item, path+".")
		if bad != nil {
			bad.write(w)
			return
		}
		// A user listed twice: the later entry wins, as if sent in turn.
		if j, ok := seen[in.id]; ok {
			ins[j] = merge(ins[j], in)
			continue
		}
		seen[in.id] = len(ins)
		ins = append(ins, in)
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if err := a.saveClients(ctx, app, ins); err != nil {
		a.s.storeErr(w, r, "create users", err)
		return
	}
	writeResult(w, map[string]int{"count": len(ins)})
}

func merge(old, in clientInput) clientInput {
	if in.nickname != nil {
		old.nickname = in.nickname
	}
	if in.avatarURL != nil {
		old.avatarURL = in.avatarURL
	}
	return old
}

func (a *admin) listClients(w http.ResponseWriter, r *http.Request, app string) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "limit", "skip":
		case "q":
			invalid("q", q.Get("q"), "MongoDB queries are not supported by chatbatchd; page with limit and skip").write(w)
			return
		default:
			invalid(k, q.Get(k), "unknown query parameter").write(w)
			return
		}
	}
	limit, bad := intParam(q.Get("limit"), "limit", clientsLimitDef, 1, clientsLimitMax)
	if bad != nil {
		bad.write(w)
		return
	}
	skip, bad := intParam(q.Get("skip"), "skip", 0, 0, 1<<31-1)
	if bad != nil {
		bad.write(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if err := a.migrate(ctx); err != nil {
		a.s.storeErr(w, r, "list users", err)
		return
	}
	users := a.s.st.TablePrefix() + "users"
	var total int
	if err := a.s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+users+" WHERE app_id = ?", app).Scan(&total); err != nil {
		a.s.storeErr(w, r, "list users", err)
		return
	}
	// Users in ID order (bytewise on every database: the ID columns are
	// binary or "C"), with their profiles where they have one.
	rows, err := a.s.db.QueryContext(ctx, "SELECT u.id, p.nickname, p.avatar_url FROM "+users+" u LEFT JOIN "+profilesTable+
		" p ON p.app_id = u.app_id AND p.id = u.id WHERE u.app_id = ? ORDER BY u.id LIMIT ? OFFSET ?", app, limit, skip)
	if err != nil {
		a.s.storeErr(w, r, "list users", err)
		return
	}
	data := []client{}
	err = func() error {
		defer rows.Close()
		for rows.Next() {
			var c client
			var nick, avatar *string
			if err := rows.Scan(&c.ID, &nick, &avatar); err != nil {
				return err
			}
			c.Nickname, c.AvatarURL = deref(nick), deref(avatar)
			data = append(data, c)
		}
		return rows.Err()
	}()
	if err != nil {
		a.s.storeErr(w, r, "list users", err)
		return
	}
	writeResult(w, map[string]any{"totalCount": total, "data": data})
}

// intParam reads an optional integer query parameter within [lo, hi].
func intParam(v, name string, def, lo, hi int) (int, *badField) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, invalid(name, v, fmt.Sprintf("must be a whole number from %d to %d", lo, hi))
	}
	return n, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// room is a room as IMKit's POST /rooms/ answers it.
type room struct {
	ID       string   `json:"_id"`
	AppID    string   `json:"appID"`
	Name     string   `json:"name"`
	RoomType string   `json:"roomType"`
	Members  []string `json:"members"`
}

func (a *admin) createRoom(w http.ResponseWriter, r *http.Request, app string) {
	obj := readObject(w, r)
	if obj == nil {
		return
	}
	var rm room
	rm.AppID = app
	if present(obj, "_id") {
		id, bad := idField(obj, "_id", "_id")
		if bad != nil {
			bad.write(w)
			return
		}
		rm.ID = id
	}
	name, bad := stringField(obj, "name", "name", adminMaxText)
	if bad != nil {
		bad.write(w)
		return
	}
	rm.Name = deref(name)
	typ, bad := stringField(obj, "roomType", "roomType", 16)
	if bad != nil {
		bad.write(w)
		return
	}
	rm.RoomType = roomTypeGroup
	if typ != nil {
		if *typ != roomTypeGroup && *typ != roomTypeDirect {
			invalid("roomType", *typ, `must be "group" or "direct"`).write(w)
			return
		}
		rm.RoomType = *typ
	}
	rm.Members = []string{}
	if present(obj, "members") {
		var raw []json.RawMessage
		if err := json.Unmarshal(obj["members"], &raw); err != nil {
			invalid("members", string(obj["members"]), "must be an array of user IDs").write(w)
			return
		}
		if len(raw) > adminMaxMembers {
			invalid("members", "", fmt.Sprintf("holds %d users; at most %d", len(raw), adminMaxMembers)).write(w)
			return
		}
		for i, v := range raw {
			var id string
			if err := json.Unmarshal(v, &id); err != nil {
				invalid(fmt.Sprintf("members[%d]", i), string(v), "must be a user ID (a string)").write(w)
				return
			}
			if !slices.Contains(rm.Members, id) {
				rm.Members = append(rm.Members, id)
			}
		}
	}
	if rm.RoomType == roomTypeDirect && len(rm.Members) != 2 {
		invalid("members", strings.Join(rm.Members, ","), fmt.Sprintf("a direct room has 2 distinct members, not %d", len(rm.Members))).write(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if len(rm.Members) > 0 {
		gone, err := a.s.st.MissingUsers(ctx, app, rm.Members)
		if err != nil {
			a.s.storeErr(w, r, "create room", err)
			return
		}
		if len(gone) > 0 {
			details := make([]batch.Detail, len(gone))
			for i, id := range gone {
				details[i] = batch.Detail{Field: "members", Value: id, Reason: "no such user"}
			}
			msg := fmt.Sprintf("members: %q is not a user", gone[0])
			if len(gone) > 1 {
				msg = fmt.Sprintf("members: %d are not users (%q, …; see details)", len(gone), gone[0])
			}
			adminErr(w, http.StatusBadRequest, batch.CodeInvalidParameter, msg+"; create users with POST /admin/clients first", details...)
			return
		}
	}
	if err := a.migrate(ctx); err != nil {
		a.s.storeErr(w, r, "create room", err)
		return
	}
	if rm.ID == "" && rm.RoomType == roomTypeDirect {
		// The pair's one-on-one room: the very room the batch API sends
		// their one-on-one messages to. Asking again answers the same room.
		id, err := a.s.st.DirectRoom(ctx, app, rm.Members[0], rm.Members[1])
		if errors.Is(err, store.ErrConflict) {
			adminErr(w, http.StatusConflict, codeRoomExists, err.Error(), batch.Detail{Field: "members", Reason: "their one-on-one room ID is taken by another room"})
			return
		}
		if err != nil {
			a.s.storeErr(w, r, "create room", err)
			return
		}
		rm.ID = id
		if _, err := a.s.db.ExecContext(ctx, a.upsertRoomInfo(), app, rm.ID, rm.Name, rm.RoomType); err != nil {
			a.s.storeErr(w, r, "create room", err)
			return
		}
		writeResult(w, rm)
		return
	}
	if rm.ID == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		rm.ID = hex.EncodeToString(b) // as long as IMKit's (MongoDB) IDs
	}
	// A room ID is taken once: by a room of the store (the demo's, a
	// one-on-one room of the batch API) or by a concurrent request, which
	// the insert into the room table of chatbatchd settles.
	gone, err := a.s.st.MissingRooms(ctx, app, []string{rm.ID})
	if err != nil {
		a.s.storeErr(w, r, "create room", err)
		return
	}
	if len(gone) == 0 {
		adminErr(w, http.StatusConflict, codeRoomExists, fmt.Sprintf("_id: room %q already exists", rm.ID), batch.Detail{Field: "_id", Value: rm.ID, Reason: "already exists"})
		return
	}
	res, err := a.s.db.ExecContext(ctx, a.insertIgnore(roomInfoTable, "app_id, id, name, room_type", "(?, ?, ?, ?)"), app, rm.ID, rm.Name, rm.RoomType)
	if err != nil {
		a.s.storeErr(w, r, "create room", err)
		return
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		adminErr(w, http.StatusConflict, codeRoomExists, fmt.Sprintf("_id: room %q already exists", rm.ID), batch.Detail{Field: "_id", Value: rm.ID, Reason: "already exists"})
		return
	}
	if err := a.s.st.AddRoom(ctx, app, rm.ID, rm.Members...); err != nil {
		_, _ = a.s.db.ExecContext(context.WithoutCancel(ctx), "DELETE FROM "+roomInfoTable+" WHERE app_id = ? AND id = ?", app, rm.ID)
		a.s.storeErr(w, r, "create room", err)
		return
	}
	writeResult(w, rm)
}

// sender is a message's sender as IMKit's messages/v3 shows it.
type sender struct {
	ID        string `json:"_id"`
	Nickname  string `json:"nickname"`
	AvatarURL string `json:"avatarUrl"`
}

// messageV3 is a message as IMKit's GET /rooms/{id}/messages/v3 shows it:
// the request's extra top-level fields (-extra-fields: originalUrl,
// sticker, mentions, …) beside the others, as IMKit shows them.
type messageV3 struct {
	ID            string          `json:"_id"`
	Message       string          `json:"message"`
	Room          string          `json:"room"`
	Sender        sender          `json:"sender"`
	MessageType   string          `json:"messageType"`
	MessageTimeMS int64           `json:"messageTimeMS"`
	CreatedAtMS   int64           `json:"createdAtMS"`
	UpdatedAtMS   int64           `json:"updatedAtMS"`
	Extra         json.RawMessage `json:"extra,omitempty"`

	fields map[string]json.RawMessage
}

// MarshalJSON writes the fields, then the extra top-level fields that do
// not collide with them, in name order.
func (m messageV3) MarshalJSON() ([]byte, error) {
	type plain messageV3
	b, err := json.Marshal(plain(m))
	if err != nil {
		return nil, err
	}
	return jsonfields.Append(b, m.fields)
}

func (a *admin) roomMessagesV3(w http.ResponseWriter, r *http.Request, p batch.Principal) {
	user, ok := roomScope(w, r, p)
	if !ok {
		return
	}
	app := p.AppID
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "limit":
		case "beforeMessage", "afterMessage", "afterTime", "timeRangeField":
			invalid(k, q.Get(k), "not supported by chatbatchd; it answers the newest messages up to limit").write(w)
			return
		default:
			invalid(k, q.Get(k), "unknown query parameter").write(w)
			return
		}
	}
	limit, bad := intParam(q.Get("limit"), "limit", messagesLimitDef, 1, messagesLimitMax)
	if bad != nil {
		bad.write(w)
		return
	}
	id := r.PathValue("roomID")
	if !a.s.checkID(w, "roomID", id) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	found, err := a.canRead(ctx, app, user, id)
	if err != nil {
		a.s.storeErr(w, r, "room messages", err)
		return
	}
	if !found {
		adminErr(w, http.StatusNotFound, batch.CodeRoomNotFound, fmt.Sprintf("room %q does not exist", id))
		return
	}
	var total int
	if err := a.s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+a.s.st.TablePrefix()+"messages WHERE app_id = ? AND room_id = ?", app, id).Scan(&total); err != nil {
		a.s.storeErr(w, r, "room messages", err)
		return
	}
	msgs, err := a.s.st.RoomMessages(ctx, app, id, limit)
	if err != nil {
		a.s.storeErr(w, r, "room messages", err)
		return
	}
	var senders []string
	for _, m := range msgs {
		if !slices.Contains(senders, m.Sender) {
			senders = append(senders, m.Sender)
		}
	}
	profiles, err := a.profiles(ctx, app, senders)
	if err != nil {
		a.s.storeErr(w, r, "room messages", err)
		return
	}
	data := make([]messageV3, len(msgs))
	for i, m := range msgs {
		data[i] = toV3(m, profiles[m.Sender])
	}
	writeResult(w, map[string]any{"totalCount": total, "data": data})
}

// toV3 is m in messages/v3's shape, its sender with the profile p.
func toV3(m store.Message, p client) messageV3 {
	ms := m.CreatedAt.UnixMilli()
	return messageV3{
		ID: m.ID, Message: m.Text, Room: m.RoomID, MessageType: m.Type,
		Sender:        sender{ID: m.Sender, Nickname: p.Nickname, AvatarURL: p.AvatarURL},
		MessageTimeMS: ms, CreatedAtMS: ms, UpdatedAtMS: ms, Extra: m.Extra, fields: m.Fields,
	}
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// The tables of chatbatchd's own. Like bunstore's, their DDL is written
// per dialect rather than derived from bun models, because the ID columns
// must compare exactly and case-sensitively, as the store's do.
func (a *admin) ddl() []string {
	id, text, suffix := "TEXT", "TEXT", ""
	switch a.s.db.Dialect().Name() {
	case dialect.PG:
		id = `TEXT COLLATE "C"`
	case dialect.MySQL:
		id, suffix = "VARBINARY(255)", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	}
	return append([]string{
		"CREATE TABLE IF NOT EXISTS " + profilesTable + " (app_id " + id + " NOT NULL, id " + id + " NOT NULL, " +
			"nickname " + text + " NULL, avatar_url " + text + " NULL, PRIMARY KEY (app_id, id))" + suffix,
		"CREATE TABLE IF NOT EXISTS " + roomInfoTable + " (app_id " + id + " NOT NULL, id " + id + " NOT NULL, " +
			"name " + text + " NOT NULL, room_type " + text + " NOT NULL, PRIMARY KEY (app_id, id))" + suffix,
	}, a.tokensDDL(id, suffix)...)
}

// migrate creates chatbatchd's tables once per process; a failure is
// retried by the next call.
func (a *admin) migrate(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.migrated {
		return nil
	}
	for _, q := range a.ddl() {
		if _, err := a.s.db.ExecContext(ctx, q); err != nil {
			// Two processes creating a table at once can collide on
			// PostgreSQL's catalog; the second attempt finds it.
			if _, err2 := a.s.db.ExecContext(ctx, q); err2 != nil {
				return fmt.Errorf("creating chatbatchd's tables: %w", err)
			}
		}
	}
	a.migrated = true
	return nil
}

// insertIgnore is an INSERT that skips a row whose key exists (0 rows
// affected) and fails on anything else, as bunstore's.
func (a *admin) insertIgnore(table, cols, values string) string {
	q := "INSERT INTO " + table + " (" + cols + ") VALUES " + values
	if a.s.db.Dialect().Name() == dialect.MySQL {
		return q + " ON DUPLICATE KEY UPDATE app_id = app_id"
	}
	return q + " ON CONFLICT DO NOTHING"
}

// upsertProfiles sets the given profile fields of users; a NULL value
// leaves the stored one.
func (a *admin) upsertProfiles() string {
	q := "INSERT INTO " + profilesTable + " (app_id, id, nickname, avatar_url) VALUES ?"
	if a.s.db.Dialect().Name() == dialect.MySQL {
		return q + " ON DUPLICATE KEY UPDATE nickname = COALESCE(VALUES(nickname), nickname), avatar_url = COALESCE(VALUES(avatar_url), avatar_url)"
	}
	return q + " ON CONFLICT (app_id, id) DO UPDATE SET nickname = COALESCE(EXCLUDED.nickname, " + profilesTable + ".nickname), " +
		"avatar_url = COALESCE(EXCLUDED.avatar_url, " + profilesTable + ".avatar_url)"
}

func (a *admin) upsertRoomInfo() string {
	q := "INSERT INTO " + roomInfoTable + " (app_id, id, name, room_type) VALUES (?, ?, ?, ?)"
	if a.s.db.Dialect().Name() == dialect.MySQL {
		return q + " ON DUPLICATE KEY UPDATE name = VALUES(name), room_type = VALUES(room_type)"
	}
	return q + " ON CONFLICT (app_id, id) DO UPDATE SET name = EXCLUDED.name, room_type = EXCLUDED.room_type"
}

// saveClients makes the users users of the store, then sets their
// profiles (in one transaction of chatbatchd's own).
func (a *admin) saveClients(ctx context.Context, app string, ins []clientInput) error {
	if err := a.migrate(ctx); err != nil {
		return err
	}
	ids := make([]string, len(ins))
	for i, in := range ins {
		ids[i] = in.id
	}
	if err := a.s.st.AddUsers(ctx, app, ids...); err != nil {
		return err
	}
	return a.s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for part := range slices.Chunk(ins, 200) {
			rows := make([]profileRow, len(part))
			for i, in := range part {
				rows[i] = profileRow{app, in.id, in.nickname, in.avatarURL}
			}
			if _, err := tx.ExecContext(ctx, a.upsertProfiles(), bun.List(rows)); err != nil {
				return err
			}
		}
		return nil
	})
}

// profileRow is one "(app_id, id, nickname, avatar_url)" of a VALUES list.
type profileRow struct {
	app, id             string
	nickname, avatarURL *string
}

// AppendQuery implements schema.QueryAppender.
func (p profileRow) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	b = append(b, '(')
	b = gen.Append(b, p.app)
	b = append(b, ", "...)
	b = gen.Append(b, p.id)
	for _, v := range []*string{p.nickname, p.avatarURL} {
		b = append(b, ", "...)
		if v == nil {
			b = append(b, "NULL"...)
		} else {
			b = gen.Append(b, *v)
		}
	}
	return append(b, ')'), nil
}

// profiles returns the profiles of ids; users without one get an empty
// profile.
func (a *admin) profiles(ctx context.Context, app string, ids []string) (map[string]client, error) {
	out := make(map[string]client, len(ids))
	for _, id := range ids {
		out[id] = client{ID: id}
	}
	if len(ids) == 0 {
		return out, nil
	}
	if err := a.migrate(ctx); err != nil {
		return nil, err
	}
	err := a.queryByIDs(ctx, "SELECT id, nickname, avatar_url FROM "+profilesTable, app, ids, func(rows *sql.Rows) error {
		var c client
		var nick, avatar *string
		if err := rows.Scan(&c.ID, &nick, &avatar); err != nil {
			return err
		}
		c.Nickname, c.AvatarURL = deref(nick), deref(avatar)
		out[c.ID] = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// queryByIDs runs q (a SELECT from one of chatbatchd's tables) with
// "WHERE app_id = ? AND id IN (…)" for ids, 500 at a time, and calls scan
// for each row.
func (a *admin) queryByIDs(ctx context.Context, q, app string, ids []string, scan func(*sql.Rows) error) error {
	for part := range slices.Chunk(ids, 500) {
		rows, err := a.s.db.QueryContext(ctx, q+" WHERE app_id = ? AND id IN (?)", app, bun.List(part))
		if err != nil {
			return err
		}
		for rows.Next() {
			if err = scan(rows); err != nil {
				break
			}
		}
		if err == nil {
			err = rows.Err()
		}
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
