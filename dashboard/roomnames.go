package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// RoomNamesPath is the room names endpoint, relative to the mount point:
// GET {mount}/room-names?id=…&id=… answers {"names":{id:name}} with the
// names Options.RoomNames gives for at most MaxRoomNames rooms.
const RoomNamesPath = "/room-names"

// MaxRoomNames is the most room IDs one request to RoomNamesPath may ask
// about.
const MaxRoomNames = 200

// serveRoomNames answers GET {mount}/room-names. It first asks the API
// (GET {BatchPath}?limit=1) with the request's credentials and, unless the
// API answers 200, answers as the API did: only a caller the API admits
// learns any name. Options.RoomNames then authorizes the request itself.
func (h *Handler) serveRoomNames(w http.ResponseWriter, r *http.Request) {
	if h.o.RoomNames == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "this dashboard has no room names")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_PARAMETER", "the query string is malformed: "+err.Error())
		return
	}
	for k := range q {
		if k != "id" {
			writeError(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("unknown query parameter %q: the room names endpoint takes id only", k))
			return
		}
	}
	ids := q["id"]
	if len(ids) > MaxRoomNames {
		writeError(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("id: %d rooms; ask about at most %d at a time", len(ids), MaxRoomNames))
		return
	}
	a := h.call(r.Context(), r, h.o.BatchPath, url.Values{"limit": {strconv.Itoa(1)}})
	if r.Context().Err() != nil {
		return
	}
	if a.status != http.StatusOK {
		a.relay(w)
		return
	}
	names := map[string]string{}
	if len(ids) > 0 {
		got, err := h.o.RoomNames(r, ids)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the room names could not be read")
			return
		}
		asked := make(map[string]bool, len(ids))
		for _, id := range ids {
			asked[id] = true
		}
		for id, name := range got {
			if asked[id] && name != "" {
				names[id] = name
			}
		}
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	_ = json.NewEncoder(w).Encode(map[string]any{"names": names})
}
