package chat

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// Server is the chat server's HTTP side.
type Server struct {
	DB   *DB
	Auth *Auth
	Hub  *Hub
	Log  *slog.Logger

	// Router is the whole router; API is its /api/v1 subrouter, where
	// integrations mount their endpoints.
	Router chi.Router
	API    chi.Router

	readHooks []func(context.Context, ReadReceipt) // OnRead
}

// NewServer builds the router.
func NewServer(db *DB, auth *Auth, hub *Hub, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{DB: db, Auth: auth, Hub: hub, Log: log}
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed here")
	})
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := db.Pool.Ping(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "database down")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Route("/api/v1", func(r chi.Router) {
		r.With(s.admin).Post("/accounts", s.createAccount)
		r.With(s.admin).Post("/sessions", s.createSession)
		r.With(s.user).Get("/conversations", s.listConversations)
		r.With(s.user).Post("/conversations", s.createConversation)
		r.With(s.user).Post("/conversations/{id}/messages", s.postMessage)
		r.With(s.user).Get("/conversations/{id}/messages", s.history)
		r.With(s.user).Post("/conversations/{id}/read", s.markRead)
		r.Get("/ws", s.websocket)
		s.API = r
	})
	s.Router = r
	return s
}

// ServeHTTP serves the router.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.Router.ServeHTTP(w, r) }

// errorBody is the chat server's error format.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.Log.ErrorContext(r.Context(), "chat: request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal", "internal error")
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (Identity, bool) {
	id, err := s.Auth.Identify(r)
	switch {
	case errors.Is(err, ErrNoCredentials):
		writeError(w, http.StatusUnauthorized, "unauthenticated", "sign in: Authorization: Bearer <session>")
		return Identity{}, false
	case err != nil:
		writeError(w, http.StatusUnauthorized, "invalid_credentials", "invalid or expired credentials")
		return Identity{}, false
	}
	return id, true
}

func (s *Server) admin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if !id.Admin {
			writeError(w, http.StatusForbidden, "forbidden", "operators only")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

func (s *Server) user(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if id.Admin {
			writeError(w, http.StatusForbidden, "forbidden", "a user session is required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Handle string `json:"handle"`
	}
	if !decode(w, r, &in) {
		return
	}
	if !ValidHandle(in.Handle) {
		writeError(w, http.StatusBadRequest, "bad_request", "handle: 1 to 255 bytes of text")
		return
	}
	a, err := s.DB.CreateAccount(r.Context(), in.Handle)
	switch {
	case errors.Is(err, ErrHandleTaken):
		writeError(w, http.StatusConflict, "handle_taken", "handle "+strconv.Quote(in.Handle)+" is taken")
	case err != nil:
		s.internal(w, r, err)
	default:
		writeJSON(w, http.StatusCreated, a)
	}
}

// createSession stands in for the server's sign-in: an operator mints a
// session for an account.
func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Handle string `json:"handle"`
	}
	if !decode(w, r, &in) {
		return
	}
	a, err := s.DB.AccountByHandle(r.Context(), in.Handle)
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "no_such_account", "no account "+strconv.Quote(in.Handle))
	case err != nil:
		s.internal(w, r, err)
	default:
		writeJSON(w, http.StatusCreated, map[string]any{"token": s.Auth.Sessions.Issue(a), "account": a})
	}
}

func (s *Server) listConversations(w http.ResponseWriter, r *http.Request) {
	id, _ := IdentityFrom(r.Context())
	cs, err := s.DB.Conversations(r.Context(), id.Account.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversations": cs})
}

func (s *Server) createConversation(w http.ResponseWriter, r *http.Request) {
	me, _ := IdentityFrom(r.Context())
	var in struct {
		Kind    string   `json:"kind"`
		Title   string   `json:"title"`
		With    string   `json:"with"`
		Members []string `json:"members"`
	}
	if !decode(w, r, &in) {
		return
	}
	ctx := r.Context()
	switch in.Kind {
	case "direct":
		other, err := s.DB.AccountByHandle(ctx, in.With)
		if errors.Is(err, ErrNotFound) {
			writeError(w, http.StatusNotFound, "no_such_account", "no account "+strconv.Quote(in.With))
			return
		} else if err != nil {
			s.internal(w, r, err)
			return
		}
		conv, err := s.DB.DirectConversation(ctx, me.Account.ID, other.ID)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": conv, "kind": "direct"})
	case "group":
		ids, err := s.DB.AccountsByHandle(ctx, in.Members)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		members := []int64{me.Account.ID}
		for _, h := range in.Members {
			id, ok := ids[h]
			if !ok {
				writeError(w, http.StatusNotFound, "no_such_account", "no account "+strconv.Quote(h))
				return
			}
			members = append(members, id)
		}
		conv, err := s.DB.CreateGroup(ctx, in.Title, members)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"id": conv, "kind": "group"})
	default:
		writeError(w, http.StatusBadRequest, "bad_request", `kind: "direct" or "group"`)
	}
}

// member checks that the signed-in account belongs to the path's conversation.
func (s *Server) member(w http.ResponseWriter, r *http.Request) (string, Identity, bool) {
	me, _ := IdentityFrom(r.Context())
	conv, ok := ParseConversationID(chi.URLParam(r, "id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no_such_conversation", "no such conversation")
		return "", me, false
	}
	isMember, err := s.DB.IsMember(r.Context(), conv, me.Account.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "no_such_conversation", "no such conversation")
		return "", me, false
	case err != nil:
		s.internal(w, r, err)
		return "", me, false
	case !isMember:
		writeError(w, http.StatusForbidden, "not_a_member", "you are not a member of this conversation")
		return "", me, false
	}
	return conv, me, true
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	conv, me, ok := s.member(w, r)
	if !ok {
		return
	}
	var in struct {
		Body    string          `json:"body"`
		Payload json.RawMessage `json:"payload"`
	}
	if !decode(w, r, &in) {
		return
	}
	if in.Body == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "body is empty")
		return
	}
	m, err := s.DB.PostMessage(r.Context(), conv, me.Account, in.Body, in.Payload)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if err := s.Hub.Publish(r.Context(), []RoomEvent{{ConversationID: conv, Event: Event{Type: "message.created", Message: m}}}); err != nil {
		s.Log.WarnContext(r.Context(), "chat: live push failed", "err", err)
	}
	writeJSON(w, http.StatusCreated, m)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	conv, _, ok := s.member(w, r)
	if !ok {
		return
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit: 1 to 200")
			return
		}
		limit = n
	}
	msgs, err := s.DB.History(r.Context(), conv, limit)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs})
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request) {
	token, ok := webSocketToken(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "send the session as Authorization: Bearer or the bearer.<token> subprotocol")
		return
	}
	acc, err := s.Auth.Sessions.Verify(token)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "invalid_credentials", "invalid or expired session")
		return
	}
	s.Hub.serve(w, r, acc)
}
