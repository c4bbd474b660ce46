package batch_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
)

// sessionKey signs the host's session tokens: "<user>.<hex HMAC of user>".
var sessionKey = []byte("the host's session signing key")

func signSession(user string) string {
	m := hmac.New(sha256.New, sessionKey)
	m.Write([]byte(user))
	return user + "." + hex.EncodeToString(m.Sum(nil))
}

// sessions is the host's own middleware: a valid "Authorization: Bearer
// <session>" puts the signed-in user in the request's context; a bad one
// is refused by the host as it refuses any request.
func sessions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			next.ServeHTTP(w, r) // no session: the IM-API-KEY header may still do
			return
		}
		user, _, _ := strings.Cut(token, ".")
		if !hmac.Equal([]byte(token), []byte(signSession(user))) {
			http.Error(w, "bad session", http.StatusUnauthorized)
			return
		}
		p := batch.Principal{AppID: "my-app", UserID: user, MaxRecipients: 100}
		next.ServeHTTP(w, r.WithContext(batch.ContextWithPrincipal(r.Context(), p)))
	})
}

// ExampleContextWithPrincipal puts the API behind the host's own
// sign-in, as IMKit's web UIs use it: a signed-in user sends as itself
// (no sender field), while the admin API key keeps working for servers.
func ExampleContextWithPrincipal() {
	st := memstore.New(nil)
	_ = st.AddUsers(context.Background(), "my-app", "alice", "bob", "system")
	svc, err := batch.New(batch.Config{
		Store:               st,
		Deliverer:           delivery.Discard{},
		AuthenticateRequest: batch.PrincipalFromRequest,
		Authenticator:       batch.NewStaticKeys(map[string]batch.Principal{"admin-key": {AppID: "my-app", Admin: true}}),
		Enqueuer:            discardEnqueuer{},
		Logger:              slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/messages/batch", sessions(svc.Handler()))
	mux.Handle("/messages/batch/", sessions(svc.Handler()))

	post := func(auth, body string) {
		req := httptest.NewRequest(http.MethodPost, "/messages/batch", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if k, ok := strings.CutPrefix(auth, "key "); ok {
			req.Header.Set("IM-API-KEY", k)
		} else if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		var env struct {
			Error *struct{ Code string } `json:"error"`
		}
		if json.Unmarshal(w.Body.Bytes(), &env) != nil {
			fmt.Println(w.Code, strings.TrimSpace(w.Body.String())) // the host's own answer
		} else if env.Error != nil {
			fmt.Println(w.Code, env.Error.Code)
		} else {
			fmt.Println(w.Code, "OK")
		}
	}
	hi := `{"messageType":"text","message":"hi","paras":[{"receiver":"bob"}]}`
	post(signSession("alice"), hi)                                                                                  // sent as alice
	post(signSession("alice"), `{"messageType":"text","message":"hi","sender":"bob","paras":[{"receiver":"bob"}]}`) // not as bob
	post("alice.forged", hi)                                                                                        // the host refuses
	post("key admin-key", `{"messageType":"text","message":"hi","sender":"system","paras":[{"receiver":"bob"}]}`)
	post("", hi)
	// Output:
	// 200 OK
	// 403 INSUFFICIENT_PERMISSIONS
	// 401 bad session
	// 200 OK
	// 401 INVALID_API_KEY
}

// discardEnqueuer queues nothing.
type discardEnqueuer struct{}

func (discardEnqueuer) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return &asynq.TaskInfo{}, nil
}
