package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// clientCall makes a request as a user of IMKit's clients: IM-CLIENT-KEY
// and IM-Authorization (either may be ""), and optional extra headers.
func clientCall(t *testing.T, method, u, clientKey, token, body string, headers ...string) (int, adminEnvelope) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	must(t, err)
	if clientKey != "" {
		req.Header.Set("IM-CLIENT-KEY", clientKey)
	}
	if token != "" {
		req.Header.Set("IM-Authorization", token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	must(t, err)
	var env adminEnvelope
	if err := json.Unmarshal(raw, &env); err != nil || (env.Result == nil && env.Error == nil) {
		t.Fatalf("%s %s: %d %q is not the API's envelope", method, u, res.StatusCode, raw)
	}
	return res.StatusCode, env
}

// issued is POST /admin/clients' answer with a token.
type issued struct {
	ID             string `json:"_id"`
	Nickname       string `json:"nickname"`
	Token          string `json:"token"`
	ExpirationDate string `json:"expirationDate"`
}

type roomsPage struct {
	TotalCount int       `json:"totalCount"`
	Data       []roomOut `json:"data"`
}

func roomIDs(p roomsPage) []string {
	var ids []string
	for _, r := range p.Data {
		ids = append(ids, r.ID)
	}
	return ids
}

// checkClients runs IMKit's client-token calls, good and bad, against a
// fresh app whose server has the client key ck and a -token-ttl of 1h.
func checkClients(t *testing.T, base, key, ck string) {
	t.Helper()
	aok(t, http.MethodPost, base+"/admin/clients/list", key, `{"data":[{"_id":"system"},{"_id":"u1","nickname":"Ada","avatarUrl":"https://example.org/ada.png"},{"_id":"u2","nickname":"Ben"},{"_id":"u3"}]}`, nil)
	aok(t, http.MethodPost, base+"/rooms/", key, `{"_id":"room-x","name":"Team X","members":["u1","u2"]}`, nil)
	aok(t, http.MethodPost, base+"/rooms/", key, `{"_id":"room-y","members":["u2","u3"]}`, nil)
	var dm room
	aok(t, http.MethodPost, base+"/rooms/", key, `{"roomType":"direct","members":["u1","u3"]}`, &dm)

	// Issued: 256 random bits, an expiration -token-ttl ahead in IMKit's
	// ISO form; a second token for the same user is another, both valid.
	var t1, t1b issued
	before := time.Now()
	aok(t, http.MethodPost, base+"/admin/clients", key, `{"_id":"u1","issueAccessToken":true}`, &t1)
	aok(t, http.MethodPost, base+"/admin/clients", key, `{"_id":"u1","issueAccessToken":true}`, &t1b)
	exp, err := time.Parse("2006-01-02T15:04:05.000Z", t1.ExpirationDate)
	if t1.ID != "u1" || t1.Nickname != "Ada" || len(t1.Token) < 43 || t1b.Token == t1.Token || err != nil ||
		exp.Before(before.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour+time.Second)) {
		t.Fatalf("issued %+v and %+v (%v)", t1, t1b, err)
	}
	// A token of the host's own, bound with its expiration.
	custom := "host-session-" + unique("")
	var t2 issued
	aok(t, http.MethodPost, base+"/admin/clients", key, `{"_id":"u2","token":"`+custom+`","expirationDate":"`+time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339)+`"}`, &t2)
	if t2.Token != "" || t2.ExpirationDate == "" {
		t.Errorf("bound %+v: the token is the host's, not shown again; its expiration is", t2)
	}
	for _, c := range []struct{ body, code, field string }{
		{`{"_id":"u2","token":"short"}`, "INVALID_PARAMETER", "token"},
		{`{"_id":"u2","token":"has a space in it, see"}`, "INVALID_PARAMETER", "token"},
		{`{"_id":"u2","token":"0123456789abcdef0123","expirationDate":"tomorrow"}`, "INVALID_PARAMETER", "expirationDate"},
		{`{"_id":"u2","token":"0123456789abcdef0123","expirationDate":"2001-01-01T00:00:00Z"}`, "INVALID_PARAMETER", "expirationDate"},
		{`{"_id":"u2","issueAccessToken":true,"token":"0123456789abcdef0123"}`, "INVALID_PARAMETER", "token"},
		{`{"_id":"u2","issueAccessToken":true,"expirationDate":"2099-01-01T00:00:00Z"}`, "INVALID_PARAMETER", "expirationDate"},
		{`{"_id":"u2","expirationDate":"2099-01-01T00:00:00Z"}`, "INVALID_PARAMETER", "expirationDate"},
		{`{"_id":"u2","issueAccessToken":"yes"}`, "INVALID_PARAMETER", "issueAccessToken"},
	} {
		status, env, _ := acall(t, http.MethodPost, base+"/admin/clients", key, c.body)
		if status != 400 || env.Error.Code != c.code || len(env.Error.Details) != 1 || env.Error.Details[0].Field != c.field {
			t.Errorf("POST /admin/clients %s = %d %+v, want 400 %s on %s", c.body, status, env.Error, c.code, c.field)
		}
	}
	// Another user's token is not taken over.
	if status, env, _ := acall(t, http.MethodPost, base+"/admin/clients", key, `{"_id":"u3","token":"`+custom+`"}`); status != 409 || env.Error.Code != "TOKEN_IN_USE" {
		t.Errorf("binding u2's token to u3 = %d %+v", status, env.Error)
	}

	// The batch API as the user: sent as u1, created by u1; a sender is
	// refused; the operator's batches are not its to see, nor u1's u2's.
	status, env := clientCall(t, http.MethodPost, base+"/messages/batch", ck, t1.Token, `{"message":"from Ada","messageType":"text","paras":[{"room":"room-x"}]}`)
	var sent struct{ BatchID string }
	if status != 200 || json.Unmarshal(env.Result, &sent) != nil || sent.BatchID == "" {
		t.Fatalf("POST /messages/batch as u1 = %d %s %+v", status, env.Result, env.Error)
	}
	waitBatch(t, base, key, sent.BatchID)
	if status, env := clientCall(t, http.MethodPost, base+"/messages/batch", ck, t1.Token, `{"message":"x","messageType":"text","sender":"system","paras":[{"room":"room-x"}]}`); status != 403 {
		t.Errorf("a user naming a sender = %d %+v", status, env.Error)
	}
	opBatch := sendAndWait(t, base, key, `{"message":"from the operator","messageType":"text","paras":[{"room":"room-y"}]}`)
	var st struct{ Sender, CreatedBy string }
	_, env = clientCall(t, http.MethodGet, base+"/messages/batch/"+sent.BatchID, ck, t1.Token, "")
	if must(t, json.Unmarshal(env.Result, &st)); st.Sender != "u1" || st.CreatedBy != "u1" {
		t.Errorf("u1's batch: %+v", st)
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/messages/batch/"+opBatch, ck, t1.Token, ""); status != 404 {
		t.Errorf("u1 reads the operator's batch: %d", status)
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/messages/batch/"+sent.BatchID, ck, custom, ""); status != 404 {
		t.Errorf("u2 reads u1's batch: %d", status)
	}
	var list struct{ Batches []struct{ BatchID string } }
	_, env = clientCall(t, http.MethodGet, base+"/messages/batch", ck, t1b.Token, "")
	if must(t, json.Unmarshal(env.Result, &list)); len(list.Batches) != 1 || list.Batches[0].BatchID != sent.BatchID {
		t.Errorf("u1's list: %+v", list)
	}

	// GET /rooms: the user's rooms in IMKit's shape, newest message first
	// with IMKit's sort, paged; IMKit's Vue SDK's q and sortUnreadFirst.
	var page roomsPage
	get := func(u, ck, token string, headers ...string) {
		t.Helper()
		status, env := clientCall(t, http.MethodGet, u, ck, token, "", headers...)
		page = roomsPage{}
		if status != 200 || json.Unmarshal(env.Result, &page) != nil {
			t.Fatalf("GET %s = %d %+v", u, status, env.Error)
		}
	}
	get(base+"/rooms", ck, t1.Token)
	if page.TotalCount != 2 || !slices.Equal(roomIDs(page), []string{dm.ID, "room-x"}) && !slices.Equal(roomIDs(page), []string{"room-x", dm.ID}) {
		t.Fatalf("u1's rooms: %+v", page)
	}
	get(base+"/rooms?skip=0&limit=30&sort="+url.QueryEscape("-lastMessage -createdTime"), ck, t1.Token)
	if !slices.Equal(roomIDs(page), []string{"room-x", dm.ID}) {
		t.Errorf("u1's rooms, newest message first: %v", roomIDs(page))
	}
	x := page.Data[0]
	if x.Name != "Team X" || x.RoomType != "group" || x.AppID == "" || len(x.Members) != 2 || x.Members[0] != (roomMember{"u1", "u1", "Ada", "https://example.org/ada.png", "user"}) ||
		x.LastMessage == nil || x.LastMessage.Message != "from Ada" || x.LastMessage.Sender.ID != "u1" || x.LastMessage.Sender.Nickname != "Ada" || x.RoomTags == nil {
		t.Errorf("room-x: %+v, last %+v", x, x.LastMessage)
	}
	if d := page.Data[1]; d.RoomType != "direct" || d.LastMessage != nil {
		t.Errorf("the direct room: %+v", d)
	}
	get(base+"/rooms?limit=1&skip=1&sort=-lastMessage", ck, t1.Token)
	if page.TotalCount != 2 || !slices.Equal(roomIDs(page), []string{dm.ID}) {
		t.Errorf("u1's rooms, page 2: %+v", page)
	}
	get(base+"/rooms?skip=0&limit=30&q="+url.QueryEscape(`{ "members": "u1" }`)+"&sort=-lastMessage&sortUnreadFirst=0", ck, t1.Token)
	if page.TotalCount != 2 {
		t.Errorf("u1's rooms as IMKit's Vue SDK asks: %+v", page)
	}
	get(base+"/rooms?q="+url.QueryEscape(`{"members":"u3"}`), ck, t1.Token)
	if !slices.Equal(roomIDs(page), []string{dm.ID}) {
		t.Errorf("u1's rooms with u3: %v", roomIDs(page))
	}
	get(base+"/rooms?q="+url.QueryEscape(`{"members":"u1","roomTags":"vip"}`), ck, t1.Token)
	if page.TotalCount != 0 || page.Data == nil {
		t.Errorf("u1's rooms tagged vip: %+v", page)
	}
	// The operator: every room, or a user's with IMKit's IM-CLIENT-ID.
	get(base+"/rooms", "", "", "IM-API-KEY", key)
	if page.TotalCount != 3 {
		t.Errorf("the app's rooms: %v", roomIDs(page))
	}
	get(base+"/rooms/", "", "", "IM-API-KEY", key, "IM-CLIENT-ID", "u3")
	if !slices.Equal(roomIDs(page), []string{dm.ID, "room-y"}) && !slices.Equal(roomIDs(page), []string{"room-y", dm.ID}) {
		t.Errorf("u3's rooms for the operator: %v", roomIDs(page))
	}
	for _, q := range []string{"limit=1001", "skip=-1", "sort=name", "q=members", "q=" + url.QueryEscape(`{"status":1}`), "q=" + url.QueryEscape(`{"members":{"$in":["u1"]}}`), "pref=" + url.QueryEscape(`{"tags":"x"}`), "updatedAfter=2020-10-15T03:28:54Z", "sortUnreadFirst=maybe", "bogus=1"} {
		if status, env := clientCall(t, http.MethodGet, base+"/rooms?"+q, ck, t1.Token, ""); status != 400 || env.Error.Code != "INVALID_PARAMETER" {
			t.Errorf("GET /rooms?%s = %d %+v", q, status, env.Error)
		}
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, t1.Token, "", "IM-CLIENT-ID", "u2"); status != 400 {
		t.Errorf("IM-CLIENT-ID naming another user than the token's = %d", status)
	}

	// GET /rooms/{id}: a room of the user's; another one is a 404 like
	// one that does not exist.
	var one roomOut
	status, env = clientCall(t, http.MethodGet, base+"/rooms/room-x", ck, t1.Token, "")
	if must(t, json.Unmarshal(env.Result, &one)); status != 200 || one.ID != "room-x" || one.Name != "Team X" || len(one.Members) != 2 || one.LastMessage == nil {
		t.Errorf("GET /rooms/room-x = %d %+v", status, one)
	}
	for _, u := range []string{"/rooms/room-y", "/rooms/nope", "/rooms/room-y/messages/v3"} {
		if status, env := clientCall(t, http.MethodGet, base+u, ck, t1.Token, ""); status != 404 || env.Error.Code != "ROOM_NOT_FOUND" || env.RC != 404 {
			t.Errorf("GET %s as u1 = %d %+v", u, status, env.Error)
		}
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms/room-y", "", "", "", "IM-API-KEY", key); status != 200 {
		t.Errorf("GET /rooms/room-y for the operator = %d", status)
	}
	var v3 v3Page
	status, env = clientCall(t, http.MethodGet, base+"/rooms/room-x/messages/v3", ck, custom, "")
	if must(t, json.Unmarshal(env.Result, &v3)); status != 200 || v3.TotalCount != 1 {
		t.Errorf("u2 reads room-x's messages: %d %+v", status, v3)
	}

	// The operator's endpoints are the API key's.
	for _, u := range []string{"GET /admin/clients", "POST /admin/clients/list", "GET /users/u1/rooms", "GET /rooms/room-x/messages", "GET /events?user=u1", "DELETE /admin/clients/u1/token"} {
		method, path, _ := strings.Cut(u, " ")
		if status, env := clientCall(t, method, base+path, ck, t1.Token, ""); status != 403 || env.Error.Code != "INSUFFICIENT_PERMISSIONS" {
			t.Errorf("%s with a client token = %d %+v", u, status, env.Error)
		}
	}

	// Refused: each with a 401 that says why.
	for _, c := range []struct{ ck, token, says string }{
		{"", t1.Token, "IM-CLIENT-KEY header is missing"},
		{"wrong", t1.Token, "not this server's client key"},
		{ck, "", "IM-Authorization header is missing"},
		{ck, "not-a-token", "unknown, revoked or expired"},
	} {
		if status, env := clientCall(t, http.MethodGet, base+"/rooms", c.ck, c.token, ""); status != 401 || env.Error.Code != "UNAUTHORIZED" || !strings.Contains(env.Error.Message, c.says) {
			t.Errorf("IM-CLIENT-KEY %q, IM-Authorization %q = %d %+v", c.ck, c.token, status, env.Error)
		}
	}

	// Revoked: one token, then all; an expired one is refused.
	var rev struct {
		Success       bool
		RevokedTokens int
	}
	aok(t, http.MethodDelete, base+"/admin/clients/u1/token", key, `{"token":"`+t1.Token+`"}`, &rev)
	if !rev.Success || rev.RevokedTokens != 1 {
		t.Errorf("revoking one token: %+v", rev)
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, t1.Token, ""); status != 401 {
		t.Errorf("a revoked token = %d", status)
	}
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, t1b.Token, ""); status != 200 {
		t.Errorf("the user's other token, after one was revoked = %d", status)
	}
	aok(t, http.MethodDelete, base+"/admin/clients/u1/token", key, "", &rev)
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, t1b.Token, ""); status != 401 || rev.RevokedTokens != 1 {
		t.Errorf("after revoking all: %d, %+v", status, rev)
	}
	short := "short-lived-" + unique("")
	aok(t, http.MethodPost, base+"/admin/clients", key, `{"_id":"u3","token":"`+short+`","expirationDate":"`+time.Now().Add(1500*time.Millisecond).UTC().Format(time.RFC3339Nano)+`"}`, nil)
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, short, ""); status != 200 {
		t.Errorf("a token before its expiration = %d", status)
	}
	time.Sleep(1600 * time.Millisecond)
	if status, _ := clientCall(t, http.MethodGet, base+"/rooms", ck, short, ""); status != 401 {
		t.Errorf("an expired token = %d", status)
	}
}

func TestClientTokens(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-app", unique("app"), "-client-key", "ck", "-token-ttl", "1h")
	checkClients(t, p.url, "k", "ck")

	// Without -client-key no token is taken, and the answer says so;
	// tokens are still issued (for when it is set).
	q := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	aok(t, http.MethodPost, q.url+"/admin/clients", "k", `{"_id":"u1"}`, nil)
	var tok issued
	aok(t, http.MethodPost, q.url+"/admin/clients", "k", `{"_id":"u1","issueAccessToken":true}`, &tok)
	if status, env := clientCall(t, http.MethodGet, q.url+"/rooms", "ck", tok.Token, ""); status != 401 || !strings.Contains(env.Error.Message, "-client-key") {
		t.Errorf("a token without -client-key = %d %+v", status, env.Error)
	}
	// -demo's client key.
	d := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	aok(t, http.MethodPost, d.url+"/admin/clients", "demo-key", `{"_id":"user-a","issueAccessToken":true}`, &tok)
	var page roomsPage
	status, env := clientCall(t, http.MethodGet, d.url+"/rooms", "demo-client-key", tok.Token, "")
	if must(t, json.Unmarshal(env.Result, &page)); status != 200 || page.TotalCount != 3 {
		t.Errorf("user-a's rooms in the demo = %d %+v", status, page)
	}
	if r := page.Data; len(r) > 0 && r[0].ID != "room-001" {
		t.Errorf("the demo's rooms, in ID order: %v", roomIDs(page))
	}
}

// TestClientTokensOnPostgresAndMySQL runs the client-token calls with
// chatbatchd's tokens table on PostgreSQL and MySQL/MariaDB.
func TestClientTokensOnPostgresAndMySQL(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		db, rd := externalServices(t)
		p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", db, "-redis", rd, "-queue", unique("q"), "-app", unique("app"), "-client-key", "ck", "-token-ttl", "1h")
		checkClients(t, p.url, "k", "ck")
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		db := freshMySQL(t)
		p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", db, "-app", unique("app"), "-client-key", "ck", "-token-ttl", "1h")
		checkClients(t, p.url, "k", "ck")
	})
}

// TestCORSOrigins: a page of a -cors-origins origin (an IMKit UI on the
// host's own site) gets its preflight answered and may POST a batch with
// a client token from the browser; a page of another origin gets neither
// (403 CROSS_ORIGIN_REQUEST, no Access-Control-Allow-Origin).
func TestCORSOrigins(t *testing.T) {
	t.Parallel()
	const site = "https://chat.example.com"
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-cors-origins", site+", http://localhost:5173")
	var tok issued
	aok(t, http.MethodPost, p.url+"/admin/clients", "demo-key", `{"_id":"user-a","issueAccessToken":true}`, &tok)

	do := func(method, origin string, body string, headers ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, p.url+"/messages/batch", strings.NewReader(body))
		must(t, err)
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	// The preflight of the Vue SDK's batchSendMessage.
	res := do(http.MethodOptions, site, "", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,im-authorization,im-client-key,x-timezone")
	h := res.Header
	if res.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != site || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "im-authorization") || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("the preflight = %d %v", res.StatusCode, h)
	}
	batch := `{"message":"from the browser","messageType":"text","paras":[{"room":"room-001"}]}`
	browser := []string{"Sec-Fetch-Site", "cross-site", "Content-Type", "application/json", "IM-CLIENT-KEY", "demo-client-key", "IM-Authorization", tok.Token}
	res = do(http.MethodPost, site, batch, browser...)
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != site || !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("the page's POST = %d %v", res.StatusCode, res.Header)
	}
	// Another site: no CORS, and the cross-origin check refuses its POST.
	if res := do(http.MethodOptions, "https://evil.example", "", "Access-Control-Request-Method", "POST"); res.Header.Get("Access-Control-Allow-Origin") != "" || res.StatusCode == 204 {
		t.Errorf("another site's preflight = %d %v", res.StatusCode, res.Header)
	}
	if res := do(http.MethodPost, "https://evil.example", batch, browser...); res.StatusCode != 403 || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another site's POST = %d %v", res.StatusCode, res.Header)
	}
	// A bad origin is a usage error.
	out, err := exec.Command(binary, "-demo", "-cors-origins", "chat.example.com").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "-cors-origins") {
		t.Errorf("-cors-origins chat.example.com: %v %s", err, out)
	}
}
