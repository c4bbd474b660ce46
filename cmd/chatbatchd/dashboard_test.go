package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"
)

// TestStreamsAuthenticateByHeader: GET /events and the dashboard's
// GET /batch-events take the key from the IM-API-KEY header only, never
// from the URL.
func TestStreamsAuthenticateByHeader(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	for _, path := range []string{"/events?user=user-a&key=demo-key", "/batch-events?key=demo-key", "/batch-events"} {
		status, env := call(t, http.MethodGet, p.url+path, "", "")
		if status == http.StatusOK || env.Error == nil {
			t.Errorf("GET %s without the header = %d %+v", path, status, env)
		}
	}
	if status, env := call(t, http.MethodGet, p.url+"/rooms/room-001/messages?key=demo-key", "demo-key", ""); status != 400 || env.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("GET /rooms/…/messages?key= = %d %+v, want 400: key is no parameter", status, env)
	}
	for _, path := range []string{"/events?user=user-a", "/batch-events"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url+path, nil)
		req.Header.Set("IM-API-KEY", "demo-key")
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		line, _ := bufio.NewReader(res.Body).ReadString('\n')
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Errorf("GET %s with the header = %d %s %q", path, res.StatusCode, res.Header.Get("Content-Type"), line)
		}
	}
}

// TestUserRoomDetails: GET /users/{id}/rooms names each room's members
// and tells the one-on-one rooms, for the dashboard's room names.
func TestUserRoomDetails(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	sendAndWait(t, p.url, "demo-key", seed.Template)
	status, env := call(t, http.MethodGet, p.url+"/users/user-a/rooms", "demo-key", "")
	if status != 200 {
		t.Fatalf("GET /users/user-a/rooms = %d %+v", status, env)
	}
	var res struct {
		Rooms       []string
		RoomDetails []struct {
			Room    string
			Members []string
			Direct  bool
		}
	}
	must(t, json.Unmarshal(env.Result, &res))
	direct := store.DirectRoomID("system", "user-a")
	got := map[string]string{}
	for _, d := range res.RoomDetails {
		got[d.Room] = strings.Join(d.Members, ",") + map[bool]string{true: " direct"}[d.Direct]
	}
	want := map[string]string{"room-001": "user-a,user-b", "room-002": "user-a,user-c", "room-003": "user-a,user-b,user-c", direct: "system,user-a direct"}
	for room, w := range want {
		if got[room] != w {
			t.Errorf("room %s: %q, want %q (all: %v)", room, got[room], w, got)
		}
	}
	if len(res.Rooms) != len(res.RoomDetails) {
		t.Errorf("rooms %v, details %v", res.Rooms, res.RoomDetails)
	}
}
