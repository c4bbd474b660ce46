package main

import (
	"net/http"

	"github.com/chatbatch/chatbatch/dashboard"
	"github.com/chatbatch/chatbatch/internal/seed"
)

// dashboardHandler is the page at /: package dashboard on this server's
// own API (api, the whole mux, which it calls in-process for its live
// progress), with the live message view of GET /events. The API key field
// is prefilled only with -demo's built-in key, never with a key of one's
// own: the page is served to anyone who can reach the port.
func (s *server) dashboardHandler(api http.Handler) http.Handler {
	key := ""
	if s.o.demo && s.o.apiKey == "demo-key" {
		key = s.o.apiKey
	}
	d, err := dashboard.New(dashboard.Options{
		API:     api,
		DemoKey: key,
		Example: seed.Template,
		Live:    &dashboard.Live{},
		Title:   "chatbatchd",
		// The names chatbatchd keeps for the app's rooms (POST /rooms).
		RoomNames: s.admin.roomNames,
	})
	if err != nil {
		panic(err) // the options are constant
	}
	return d
}
