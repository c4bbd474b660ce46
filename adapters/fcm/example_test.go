package fcm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"golang.org/x/oauth2"

	"github.com/chatbatch/chatbatch/adapters/fcm"
	"github.com/chatbatch/chatbatch/delivery"
)

// The host keeps its users' device tokens and prunes those FCM reports
// invalid; chatbatch's worker pushes every chunk's notifications through
// the Pusher. Here a fake FCM stands in for fcm.googleapis.com, and a
// static token source for the service account (Options.CredentialsFile).
func Example() {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Message struct {
				Token        string            `json:"token"`
				Notification map[string]string `json:"notification"`
				Data         map[string]string `json:"data"`
			} `json:"message"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		m := body.Message
		fmt.Println(r.URL.Path, r.Header.Get("Authorization"), m.Token, m.Notification["title"], m.Notification["body"], m.Data["messageID"])
		if m.Token == "old-phone" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",`+
				`"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`)
			return
		}
		fmt.Fprint(w, `{"name":"projects/my-project/messages/1"}`)
	}))
	defer fake.Close()

	devices := map[string][]string{"user-a": {"old-phone", "new-phone"}} // user-b has none
	p, err := fcm.New(&fcm.Options{
		Project:     "my-project",
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "example-token"}),
		Endpoint:    fake.URL,
		Tokens: fcm.TokensFunc(func(_ context.Context, app string, users []string) (map[string][]string, error) {
			return devices, nil // a SELECT … WHERE app_id = ? AND user_id IN (…)
		}),
		OnInvalidToken: func(_ context.Context, app, user, token string, _ error) {
			fmt.Println("prune", app, user, token) // a DELETE
		},
		Concurrency: 1, // one request at a time, so that the output is in order
	})
	if err != nil {
		panic(err)
	}
	// In a host this is batch.Config{Pusher: p}.
	err = p.Push(context.Background(), []delivery.Notification{
		{AppID: "app1", UserID: "user-a", MessageID: "batch-1-0", RoomID: "room-7", Sender: "system", Type: "text", Text: "Your order has shipped"},
		{AppID: "app1", UserID: "user-b", MessageID: "batch-1-1", RoomID: "room-8", Sender: "system", Type: "text", Text: "Your order has shipped"},
	})
	fmt.Println("pushed:", err)
	// Output:
	// /v1/projects/my-project/messages:send Bearer example-token old-phone system Your order has shipped batch-1-0
	// prune app1 user-a old-phone
	// /v1/projects/my-project/messages:send Bearer example-token new-phone system Your order has shipped batch-1-0
	// pushed: <nil>
}
