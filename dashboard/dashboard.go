// Package dashboard is an operator's console for the Batch Send Messages
// API: the app's batches with live progress; a batch's content,
// recipients and failures, Cancel and Recall; a composer from a form and
// a CSV of recipients (or raw JSON) with a dry-run preview; the history of
// every batch, filtered and paged; and the queue's health, live, with
// archived chunks to re-run. Every view has a URL of its own (#/batches,
// #/batches/{id}, #/compose, #/history, #/queue). It is an http.Handler a
// host mounts behind its own admin authentication:
//
//	dash, err := dashboard.New(dashboard.Options{API: mux})
//	mux.Handle("/admin/batches/", http.StripPrefix("/admin/batches", adminOnly(dash)))
//
// The page uses only the public HTTP API of the batch handler, from the
// browser with fetch, authenticated by the host's session cookie or by an
// API key typed once, kept in sessionStorage and sent as the IM-API-KEY
// header (never in a URL). Its live progress comes from the handler's own
// Server-Sent Events endpoint, GET {mount}/batch-events, which polls the
// batch API in-process with the browser's credentials and pushes what
// changed; the browser reads it with fetch, so it can send the header.
// With Options.RoomNames, GET {mount}/room-names names the rooms of the
// batch detail's recipients.
//
// The assets are embedded: plain HTML, CSS and JavaScript, no build step,
// nothing from a CDN. The package imports only the standard library (and
// internal/seed for its example).
package dashboard

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/internal/seed"
)

// Options configure the dashboard.
type Options struct {
	// API serves the batch API (and, with Live, the host's live
	// endpoints) at the paths the browser uses: typically the host's
	// whole mux. The events endpoint calls it in-process with the
	// browser's credentials. Required.
	API http.Handler
	// BatchPath is where the browser reaches the batch API: the batch
	// handler's Config.BasePath as seen from the browser. Defaults to
	// "/messages/batch".
	BatchPath string
	// SessionAuth says the host's session cookie authenticates the API
	// requests (batch.Config.AuthenticateRequest): the page asks for no
	// API key. Otherwise the page asks for one and sends it as the
	// IM-API-KEY header.
	SessionAuth bool
	// DemoKey, when set, prefills the API key field. For demos only: the
	// key is in the page for anyone who can load it.
	DemoKey string
	// Example is the request the composer starts with. Defaults to the
	// API description's "Using template variables" example.
	Example string
	// Live enables the live message view of one user, for a host that
	// serves chatbatchd's live endpoints: GET {Live.Base}/events?user=
	// (Server-Sent Events with the IM-API-KEY header or the session
	// cookie), GET {Live.Base}/users/{userID}/rooms and GET
	// {Live.Base}/rooms/{roomID}/messages.
	Live *Live
	// Title is the page's title. Defaults to "Batch messages".
	Title string
	// Interval is how often the events endpoint polls the batch API for
	// each open page: one GET of the list, and one of the batch shown in
	// detail, per interval (they count against the API key's rate limit).
	// Defaults to 1 s.
	Interval time.Duration
	// ListLimit is how many of the newest batches the page shows.
	// Defaults to 20; at most 500.
	ListLimit int
	// MaxRecipients is the most recipients one request may have (the
	// batch handler's Config.MaxRecipients): the composer refuses a
	// longer CSV before sending it. Defaults to 10,000, the handler's
	// default.
	MaxRecipients int
	// Forward are the request headers the events endpoint passes on to
	// the API. Defaults to IM-API-KEY, API_KEY, Authorization and Cookie.
	Forward []string
	// RoomNames, optional, names rooms for the batch detail's recipients:
	// the page asks GET {mount}/room-names?id=…, which calls it with the
	// browser's request, so the host can authorize it as it does the API
	// (the dashboard has first checked the request's credentials against
	// the API). IDs it cannot name are left out of the map. nil: rooms
	// show by ID.
	RoomNames func(r *http.Request, roomIDs []string) (map[string]string, error)
}

// Live locates the host's live message endpoints.
type Live struct {
	// Base is the path before /events, /users/… and /rooms/…; "" for
	// the root.
	Base string
	// Limit is how many messages the page keeps; older ones are dropped.
	// Defaults to 200.
	Limit int
}

// DefaultExample is the composer's request unless Options.Example is set:
// the API description's "Using template variables".
const DefaultExample = seed.Template

//go:embed web
var webFiles embed.FS

// EventsPath is the events endpoint, relative to the mount point.
const EventsPath = "/batch-events"

// Handler is the dashboard.
type Handler struct {
	o      Options
	index  []byte
	assets http.Handler
}

// New returns the dashboard. It serves the page at "/" (and
// "/index.html"), its assets below "/assets/" and the events endpoint at
// EventsPath; mount it with http.StripPrefix below a path of its own.
func New(o Options) (*Handler, error) {
	if o.API == nil {
		return nil, errors.New("dashboard: Options.API is required")
	}
	if o.BatchPath == "" {
		o.BatchPath = "/messages/batch"
	}
	if !strings.HasPrefix(o.BatchPath, "/") || strings.HasSuffix(o.BatchPath, "/") {
		return nil, errors.New("dashboard: Options.BatchPath must start with / and not end with /")
	}
	if o.Example == "" {
		o.Example = DefaultExample
	}
	if o.Title == "" {
		o.Title = "Batch messages"
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.ListLimit <= 0 {
		o.ListLimit = 20
	}
	o.ListLimit = min(o.ListLimit, 500)
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = 10_000
	}
	if o.Forward == nil {
		o.Forward = []string{"IM-API-KEY", "API_KEY", "Authorization", "Cookie"}
	}
	if o.Live != nil {
		l := *o.Live
		if l.Limit <= 0 {
			l.Limit = 200
		}
		if strings.HasSuffix(l.Base, "/") || (l.Base != "" && !strings.HasPrefix(l.Base, "/")) {
			return nil, errors.New("dashboard: Options.Live.Base must be empty or start with / and not end with /")
		}
		o.Live = &l
	}
	h := &Handler{o: o}
	var err error
	if h.index, err = h.renderIndex(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		return nil, err
	}
	h.assets = http.StripPrefix("/assets", http.FileServerFS(sub))
	return h, nil
}

var indexTemplate = template.Must(template.ParseFS(webFiles, "web/index.html"))

func (h *Handler) renderIndex() ([]byte, error) {
	data := struct {
		Options
		LiveBase     string
		LiveLimit    int
		HasRoomNames bool
	}{Options: h.o, HasRoomNames: h.o.RoomNames != nil}
	if h.o.Live != nil {
		data.LiveBase, data.LiveLimit = h.o.Live.Base, h.o.Live.Limit
	}
	var b bytes.Buffer
	if err := indexTemplate.ExecuteTemplate(&b, "index.html", data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// csp allows the page its own scripts and styles and requests to its own
// origin only.
const csp = "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "" {
		// Mounted at /x and asked for /x: the page's relative URLs need
		// the slash.
		target := r.URL.EscapedPath() + "/"
		if u := r.RequestURI; u != "" && !strings.Contains(u, "?") {
			target = u + "/"
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	switch {
	case p == EventsPath:
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "the events endpoint answers GET only")
			return
		}
		h.serveEvents(w, r)
		return
	case p == RoomNamesPath:
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "the room names endpoint answers GET only")
			return
		}
		h.serveRoomNames(w, r)
		return
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	switch {
	case p == "/" || p == "/index.html":
		hd.Set("Content-Type", "text/html; charset=utf-8")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Frame-Options", "DENY")
		if r.Method == http.MethodGet {
			_, _ = w.Write(h.index)
		}
	case p == "/assets/app.js" || p == "/assets/style.css":
		hd.Set("Cache-Control", "no-cache")
		h.assets.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}
