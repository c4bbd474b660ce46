package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"database/sql"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// IMKit's room reads, for its UIs' target pickers (the mass-texting modal
// lists the user's rooms) and for operators:
//
//	GET /rooms?skip&limit&sort&q&sortUnreadFirst   the user's rooms, a page
//	GET /rooms/{id}                                one room
//
// A client token (IM-CLIENT-KEY + IM-Authorization) reads the rooms its
// user is a member of; any other room is a 404, as if it did not exist.
// The API key reads every room of the app, or with IMKit's IM-CLIENT-ID
// header the rooms of that user.
//
// The shape is IMKit's (imkit/api-doc: list-rooms.md, get-a-room.md) as
// far as chatbatchd keeps the data: _id (and id), appID, name, roomType,
// members with their profiles, lastMessage in messages/v3's shape, and
// roomTags (always empty). chatbatchd keeps no reads, preferences, tags,
// covers or creation times, so unread, memberProperties, pref, cover and
// createdTimeMS are absent rather than made up.

const (
	roomsLimitMax = 1000 // GET /rooms: the most rooms of one page
)

// roomMember is a member as IMKit's rooms show one.
type roomMember struct {
	ID         string `json:"_id"`
	IDAgain    string `json:"id"`
	Nickname   string `json:"nickname"`
	AvatarURL  string `json:"avatarUrl"`
	ClientType string `json:"clientType"` // IMKit's Vue SDK counts members of type "user"
}

// roomOut is a room as IMKit's GET /rooms and GET /rooms/{id} show it.
type roomOut struct {
	ID          string       `json:"_id"`
	IDAgain     string       `json:"id"`
	AppID       string       `json:"appID"`
	Name        string       `json:"name"`
	RoomType    string       `json:"roomType"`
	Members     []roomMember `json:"members"`
	LastMessage *messageV3   `json:"lastMessage,omitempty"`
	RoomTags    []string     `json:"roomTags"`
}

// roomScope is whose rooms a request reads: a user's, or ("") the app's.
func roomScope(w http.ResponseWriter, r *http.Request, p batch.Principal) (string, bool) {
	asked := r.Header.Get("IM-CLIENT-ID")
	if p.Admin {
		if asked != "" {
			if bad := checkIDValue("IM-CLIENT-ID", asked); bad != nil {
				bad.write(w)
				return "", false
			}
		}
		return asked, true
	}
	if p.UserID == "" {
		adminErr(w, http.StatusForbidden, batch.CodeInsufficientPermission, "this principal is neither an operator nor a user")
		return "", false
	}
	if asked != "" && asked != p.UserID {
		invalid("IM-CLIENT-ID", asked, "is not the user of the IM-Authorization token").write(w)
		return "", false
	}
	return p.UserID, true
}

// listRooms is IMKit's GET /rooms.
func (a *admin) listRooms(w http.ResponseWriter, r *http.Request, p batch.Principal) {
	user, ok := roomScope(w, r, p)
	if !ok {
		return
	}
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "skip", "limit", "sort", "q", "sortUnreadFirst":
		case "updatedAfter", "pref":
			invalid(k, q.Get(k), "not supported by chatbatchd, which keeps no room preferences and filters on no time; page with skip and limit").write(w)
			return
		default:
			invalid(k, q.Get(k), "unknown query parameter").write(w)
			return
		}
	}
	skip, bad := intParam(q.Get("skip"), "skip", 0, 0, 1<<31-1)
	if bad != nil {
		bad.write(w)
		return
	}
	limit, bad := intParam(q.Get("limit"), "limit", 0, 0, roomsLimitMax)
	if bad != nil {
		bad.write(w)
		return
	}
	if limit == 0 { // IMKit's "no limit"
		limit = roomsLimitMax
	}
	byLast, bad := roomsSort(q.Get("sort"))
	if bad != nil {
		bad.write(w)
		return
	}
	// sortUnreadFirst puts rooms with unread messages first: chatbatchd
	// keeps no reads, so there are none and the order stays.
	if v := q.Get("sortUnreadFirst"); v != "" && v != "0" && v != "1" && v != "true" && v != "false" {
		invalid("sortUnreadFirst", v, "must be 0 or 1").write(w)
		return
	}
	member, noTags, bad := roomsFilter(q.Get("q"))
	if bad != nil {
		bad.write(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	out := struct {
		TotalCount int       `json:"totalCount"`
		Data       []roomOut `json:"data"`
	}{Data: []roomOut{}}
	if noTags { // a filter on roomTags: no room has any
		writeResult(w, out)
		return
	}

	prefix := a.s.st.TablePrefix()
	from, col, args := " FROM "+prefix+"rooms m WHERE m.app_id = ?", "m.id", []any{p.AppID}
	if user != "" {
		from, col, args = " FROM "+prefix+"room_members m WHERE m.app_id = ? AND m.user_id = ?", "m.room_id", []any{p.AppID, user}
	}
	if member != "" {
		from += " AND EXISTS (SELECT 1 FROM " + prefix + "room_members x WHERE x.app_id = m.app_id AND x.room_id = " + col + " AND x.user_id = ?)"
		args = append(args, member)
	}
	if err := a.s.db.QueryRowContext(ctx, "SELECT COUNT(*)"+from, args...).Scan(&out.TotalCount); err != nil {
		a.s.storeErr(w, r, "list rooms", err)
		return
	}
	// Rooms by their newest message (rooms without one last), then by ID
	// (bytewise on every database).
	query := "SELECT " + col + from + " ORDER BY " + col
	if byLast != "" {
		last := "(SELECT MAX(g.created_at) FROM " + prefix + "messages g WHERE g.app_id = m.app_id AND g.room_id = " + col + ")"
		query = "SELECT t.id FROM (SELECT " + col + " AS id, " + last + " AS last" + from + ") t " +
			"ORDER BY CASE WHEN t.last IS NULL THEN 1 ELSE 0 END, t.last " + byLast + ", t.id"
	}
	rows, err := a.s.db.QueryContext(ctx, query+" LIMIT ? OFFSET ?", append(args, limit, skip)...)
	if err != nil {
		a.s.storeErr(w, r, "list rooms", err)
		return
	}
	var ids []string
	if err := scanIDs(rows, &ids); err != nil {
		a.s.storeErr(w, r, "list rooms", err)
		return
	}
	if out.Data, err = a.rooms(ctx, p.AppID, ids); err != nil {
		a.s.storeErr(w, r, "list rooms", err)
		return
	}
	writeResult(w, out)
}

// roomsSort reads GET /rooms' sort: IMKit's fields separated by spaces, a
// leading - descending. It returns the order of lastMessage ("DESC",
// "ASC", or "" for none). createdTime is accepted and has no effect:
// chatbatchd keeps no room creation time (rooms tie, in ID order).
func roomsSort(v string) (string, *badField) {
	order := ""
	for _, f := range strings.Fields(v) {
		desc := strings.HasPrefix(f, "-")
		switch strings.TrimPrefix(f, "-") {
		case "lastMessage":
			if order == "" {
				order = "ASC"
				if desc {
					order = "DESC"
				}
			}
		case "createdTime":
		default:
			return "", invalid("sort", v, fmt.Sprintf("%q: chatbatchd sorts by lastMessage and createdTime (- for descending)", f))
		}
	}
	return order, nil
}

// roomsFilter reads GET /rooms' q, a MongoDB-style filter, as far as
// IMKit's UIs send it: {"members": USER} (rooms USER is a member of) and
// {"roomTags": TAG} (rooms with that tag: none, as chatbatchd keeps no
// tags).
func roomsFilter(v string) (member string, noTags bool, bad *badField) {
	if v == "" {
		return "", false, nil
	}
	var q map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &q); err != nil || q == nil {
		return "", false, invalid("q", v, "must be a JSON object such as {\"members\":\"user-a\"}")
	}
	for k, raw := range q {
		switch k {
		case "members":
			if err := json.Unmarshal(raw, &member); err != nil {
				return "", false, invalid("q", v, "members: chatbatchd filters on one user ID (a string)")
			}
			if bad := checkIDValue("q.members", member); bad != nil {
				return "", false, bad
			}
		case "roomTags":
			noTags = true
		default:
			return "", false, invalid("q", v, fmt.Sprintf("%q: chatbatchd filters on members and roomTags only", k))
		}
	}
	return member, noTags, nil
}

// getRoom is IMKit's GET /rooms/{id}: a room of the app for the API key, a
// room of the user's for a client token; 404 ROOM_NOT_FOUND otherwise.
func (a *admin) getRoom(w http.ResponseWriter, r *http.Request, p batch.Principal) {
	user, ok := roomScope(w, r, p)
	if !ok {
		return
	}
	for k := range r.URL.Query() {
		invalid(k, r.URL.Query().Get(k), "unknown query parameter").write(w)
		return
	}
	id := r.PathValue("roomID")
	if !a.s.checkID(w, "roomID", id) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	found, err := a.canRead(ctx, p.AppID, user, id)
	if err != nil {
		a.s.storeErr(w, r, "get room", err)
		return
	}
	if !found {
		adminErr(w, http.StatusNotFound, batch.CodeRoomNotFound, fmt.Sprintf("room %q does not exist", id))
		return
	}
	rooms, err := a.rooms(ctx, p.AppID, []string{id})
	if err != nil {
		a.s.storeErr(w, r, "get room", err)
		return
	}
	writeResult(w, rooms[0])
}

// canRead reports whether room exists in app and, for a user (not ""),
// has the user as a member.
func (a *admin) canRead(ctx context.Context, app, user, room string) (bool, error) {
	gone, err := a.s.st.MissingRooms(ctx, app, []string{room})
	if err != nil || len(gone) > 0 {
		return false, err
	}
	if user == "" {
		return true, nil
	}
	members, err := a.s.st.RoomMembers(ctx, app, []string{room})
	if err != nil {
		return false, err
	}
	return slices.Contains(members[room], user), nil
}

// rooms returns the rooms ids (which exist) in IMKit's shape, in order.
func (a *admin) rooms(ctx context.Context, app string, ids []string) ([]roomOut, error) {
	out := make([]roomOut, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	members, err := a.s.st.RoomMembers(ctx, app, ids)
	if err != nil {
		return nil, err
	}
	if err := a.migrate(ctx); err != nil {
		return nil, err
	}
	type info struct{ name, typ string }
	infos := map[string]info{}
	err = a.queryByIDs(ctx, "SELECT id, name, room_type FROM "+roomInfoTable, app, ids, func(rows *sql.Rows) error {
		var id string
		var in info
		if err := rows.Scan(&id, &in.name, &in.typ); err != nil {
			return err
		}
		infos[id] = in
		return nil
	})
	if err != nil {
		return nil, err
	}
	last := make(map[string]store.Message, len(ids))
	users := []string{}
	for _, id := range ids {
		msgs, err := a.s.st.RoomMessages(ctx, app, id, 1)
		if err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			last[id] = msgs[0]
			users = append(users, msgs[0].Sender)
		}
		users = append(users, members[id]...)
	}
	slices.Sort(users)
	profiles, err := a.profiles(ctx, app, slices.Compact(users))
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		m := slices.Clone(members[id])
		slices.Sort(m)
		in, ok := infos[id]
		if !ok { // a room of the store only: the demo's, a one-on-one room of the batch API
			in.typ = roomTypeGroup
			if len(m) == 2 && a.s.st.DirectRoomID(m[0], m[1]) == id {
				in.typ = roomTypeDirect
			}
		}
		o := roomOut{ID: id, IDAgain: id, AppID: app, Name: in.name, RoomType: in.typ, Members: make([]roomMember, len(m)), RoomTags: []string{}}
		for j, u := range m {
			c := profiles[u]
			o.Members[j] = roomMember{ID: u, IDAgain: u, Nickname: c.Nickname, AvatarURL: c.AvatarURL, ClientType: "user"}
		}
		if msg, ok := last[id]; ok {
			v3 := toV3(msg, profiles[msg.Sender])
			o.LastMessage = &v3
		}
		out[i] = o
	}
	return out, nil
}

// scanIDs reads one string column of rows into ids and closes rows.
func scanIDs(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close() error
}, ids *[]string) error {
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		*ids = append(*ids, id)
	}
	return rows.Err()
}

// roomNames is the dashboard's Options.RoomNames: the names of the rooms
// ids of the request's app that have one, for the API key (a user's
// client token gets none). The request is authenticated as the API's are
// (and counted against the app's rate limit).
func (a *admin) roomNames(r *http.Request, ids []string) (map[string]string, error) {
	p, ok := a.s.svc.Authenticate(discardWriter{}, r)
	if !ok || !p.Admin {
		return map[string]string{}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.s.o.storeTimeout)
	defer cancel()
	if err := a.migrate(ctx); err != nil {
		return nil, err
	}
	names := map[string]string{}
	err := a.queryByIDs(ctx, "SELECT id, name FROM "+roomInfoTable, p.AppID, ids, func(rows *sql.Rows) error {
		var id, name string
		if err := rows.Scan(&id, &name); err != nil {
			return err
		}
		if name != "" {
			names[id] = name
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// discardWriter takes an answer nobody reads.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}
