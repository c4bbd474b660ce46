package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/chatbatch/chatbatch/adapters/webhook"
	"github.com/chatbatch/chatbatch/store"
)

// The host's endpoint verifies each request with Verify; chatbatch's
// worker POSTs every chunk's messages through a Deliverer.
func Example() {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]string{secret}, r.Header, body, time.Now(), 0); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		fmt.Println("verified", r.Header.Get("webhook-id")[:4], len(body) > 0)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	d, err := webhook.NewDeliverer(&webhook.Options{URL: receiver.URL, Secrets: []string{secret}})
	if err != nil {
		panic(err)
	}
	// In a host this is batch.Config{Deliverer: d}.
	err = d.Deliver(context.Background(), []store.Message{{ID: "batch-1-0", AppID: "app1", RoomID: "room-7", Sender: "system", Type: "text", Text: "Hi", CreatedAt: time.Now()}})
	fmt.Println("delivered:", err == nil)
	// Output:
	// verified msg_ true
	// delivered: true
}
