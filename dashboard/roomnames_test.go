package dashboard_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/dashboard"
)

// listAPI answers GET /api/messages/batch?limit=1 for the key "k" only.
type listAPI struct{ calls int }

func (l *listAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.calls++
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if r.Header.Get("IM-API-KEY") != "k" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"RC":401,"RM":"Unauthorized","error":{"code":"INVALID_API_KEY","message":"no key","details":[]}}`)
		return
	}
	if r.URL.Path != "/api/messages/batch" || r.URL.Query().Get("limit") != "1" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"RC":400,"RM":"Bad Request","error":{"code":"INVALID_PARAMETER","message":"unexpected","details":[]}}`)
		return
	}
	fmt.Fprint(w, `{"RC":0,"RM":"OK","result":{"batches":[]}}`)
}

func TestRoomNames(t *testing.T) {
	api := &listAPI{}
	var asked []string
	srv := newDashboard(t, api, dashboard.Options{RoomNames: func(r *http.Request, ids []string) (map[string]string, error) {
		if r.Header.Get("IM-API-KEY") != "k" {
			t.Errorf("RoomNames got the request without its key")
		}
		asked = ids
		return map[string]string{"a1": "Support <b>", "b2": "", "zz": "not asked"}, nil
	}})
	u := srv.URL + "/admin/batches/room-names?"
	key := map[string]string{"IM-API-KEY": "k"}

	res, body := get(t, u+"id=a1&id=b2&id=c3", key)
	if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("names: %d %q %s", res.StatusCode, res.Header.Get("Cache-Control"), body)
	}
	var got struct{ Names map[string]string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Names) != 1 || got.Names["a1"] != "Support <b>" || strings.Join(asked, ",") != "a1,b2,c3" {
		t.Fatalf("names %v for %v", got.Names, asked)
	}

	// Without credentials: the API's own 401, and RoomNames is not asked.
	asked = nil
	res, body = get(t, u+"id=a1", nil)
	if res.StatusCode != 401 || !strings.Contains(body, "INVALID_API_KEY") || asked != nil {
		t.Fatalf("no key: %d %s (asked %v)", res.StatusCode, body, asked)
	}

	// More than 200 IDs, or an unknown parameter: 400.
	q := url.Values{}
	for i := range dashboard.MaxRoomNames + 1 {
		q.Add("id", fmt.Sprint("r", i))
	}
	if res, body = get(t, u+q.Encode(), key); res.StatusCode != 400 {
		t.Fatalf("201 ids: %d %s", res.StatusCode, body)
	}
	q.Del("id")
	for i := range dashboard.MaxRoomNames {
		q.Add("id", fmt.Sprint("r", i))
	}
	if res, body = get(t, u+q.Encode(), key); res.StatusCode != 200 {
		t.Fatalf("200 ids: %d %s", res.StatusCode, body)
	}
	if res, body = get(t, u+"room=a1", key); res.StatusCode != 400 {
		t.Fatalf("unknown parameter: %d %s", res.StatusCode, body)
	}

	// The page knows to ask.
	if _, page := get(t, srv.URL+"/admin/batches/", nil); !strings.Contains(page, `data-room-names="true"`) {
		t.Fatal("the page does not say it has room names")
	}
}

func TestRoomNamesWithoutTheOption(t *testing.T) {
	api := &listAPI{}
	srv := newDashboard(t, api, dashboard.Options{})
	res, body := get(t, srv.URL+"/admin/batches/room-names?id=a1", map[string]string{"IM-API-KEY": "k"})
	if res.StatusCode != 404 || api.calls != 0 {
		t.Fatalf("without RoomNames: %d %s (%d API calls)", res.StatusCode, body, api.calls)
	}
	if _, page := get(t, srv.URL+"/admin/batches/", nil); strings.Contains(page, `data-room-names="true"`) {
		t.Fatal("the page says it has room names")
	}
}
