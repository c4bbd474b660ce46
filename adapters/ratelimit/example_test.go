package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/chatbatch/chatbatch/adapters/ratelimit"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
)

// A push provider that takes 100 notifications a second: the wrapper
// hands it a chunk's notifications in slices of the burst and waits for
// its turn instead of failing. Across several workers use
// ratelimit.Redis with one key instead of Local.
func Example() {
	provider := deliverytest.NewRecorder() // in a host: the FCM or APNs pusher
	p := ratelimit.NewPusher(provider, ratelimit.Local(100, 10))
	// In a host this is batch.Config{Pusher: p}.
	ns := make([]delivery.Notification, 30)
	for i := range ns {
		ns[i] = delivery.Notification{AppID: "app1", UserID: fmt.Sprintf("user-%d", i), MessageID: fmt.Sprintf("batch-1-%d", i)}
	}
	start := time.Now()
	err := p.Push(context.Background(), ns)
	took := time.Since(start)
	fmt.Println("pushed:", len(provider.Notifications()), err)
	fmt.Println("calls of at most 10:", provider.PushCalls())
	// 30 at 100/s with a burst of 10: the last 20 wait about 0.2 s.
	fmt.Println("waited for the limit:", took >= 150*time.Millisecond)
	// Output:
	// pushed: 30 <nil>
	// calls of at most 10: 3
	// waited for the limit: true
}
