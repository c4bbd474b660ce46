package batch_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// receivers is a request body of n one-on-one recipients (the seeded
// users, round robin).
func receivers(n int, extra string) string {
	users := []string{"user-a", "user-b", "user-c", "user-d"}
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf(`{"receiver":%q}`, users[i%len(users)])
	}
	return `{"messageType":"text","message":"m",` + extra + `"paras":[` + strings.Join(p, ",") + `]}`
}

// clock is a Config.Now the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAdmission: past an app's bound a POST is 429 BACKLOG_FULL, past
// the total 503 OVERLOADED, each with a Retry-After and nothing stored;
// what is scheduled for later, dry runs and a batch that finds the
// backlog empty are admitted; once the workers drain the backlog, POSTs
// are admitted again.
func TestAdmission(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Now = clk.Now
		c.Admission = &batch.Admission{MaxPending: 10, MaxPendingPerApp: 6, Refresh: time.Second}
	})
	post := func(key, body string) *bt.Response {
		t.Helper()
		clk.add(2 * time.Second) // every POST reads the backlog afresh
		return e.Post(t, key, body)
	}
	refused := func(r *bt.Response, status int, code string) {
		t.Helper()
		if r.Status != status || r.Error == nil || r.Error.Code != code {
			t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, code)
		}
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After %q, want whole seconds of at least 1", r.Header.Get("Retry-After"))
		}
	}
	bt.Accepted(t, post(bt.AdminKey, receivers(8, ""))) // past the app's bound, but the backlog was empty
	tasks := len(e.Enq.All())
	refused(post(bt.AdminKey, receivers(1, "")), http.StatusTooManyRequests, batch.CodeBacklogFull)
	if n := len(e.Enq.All()); n != tasks {
		t.Errorf("a refused POST enqueued %d tasks", n-tasks)
	}
	// Scheduled for later, or a dry run: admitted.
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	bt.Accepted(t, post(bt.AdminKey, receivers(3, `"sendAt":"`+later+`",`)))
	if r := e.Do(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, bt.JSONContentType, strings.NewReader(receivers(3, ""))); r.Status != 200 {
		t.Errorf("a dry run with the backlog full: %d %s", r.Status, r.Raw)
	}
	// The other app: 8 are waiting in all; 2 more fit, 3 do not.
	refused(post(bt.OtherKey, receivers(3, "")), http.StatusServiceUnavailable, batch.CodeOverloaded)
	bt.Accepted(t, post(bt.OtherKey, receivers(2, "")))
	refused(post(bt.OtherKey, receivers(1, "")), http.StatusServiceUnavailable, batch.CodeOverloaded)

	// The workers drain everything due.
	e.ProcessAll(t)
	bt.Accepted(t, post(bt.AdminKey, receivers(6, "")))
	bt.Accepted(t, post(bt.OtherKey, receivers(4, "")))
	refused(post(bt.OtherKey, receivers(1, "")), http.StatusServiceUnavailable, batch.CodeOverloaded)
}

// Within one Refresh, a process counts what it accepted itself: a burst
// of POSTs cannot pass the bound between two readings.
func TestAdmissionBetweenReadings(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Admission = &batch.Admission{MaxPendingPerApp: 5, Refresh: time.Hour}
	})
	bt.Accepted(t, e.Post(t, bt.AdminKey, receivers(3, "")))
	bt.Accepted(t, e.Post(t, bt.AdminKey, receivers(2, "")))
	if r := e.Post(t, bt.AdminKey, receivers(1, "")); r.Status != http.StatusTooManyRequests {
		t.Errorf("a sixth recipient within one reading: %d %s, want 429", r.Status, r.Raw)
	}
}

// The Retry-After of a refusal is how long the workers take, at the rate
// they drained the backlog between readings, to make room.
func TestAdmissionRetryAfterFromDrainRate(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Now = clk.Now
		c.ChunkSize = 10
		c.Admission = &batch.Admission{MaxPendingPerApp: 100, Refresh: time.Second}
	})
	bt.Accepted(t, e.Post(t, bt.AdminKey, receivers(100, ""))) // backlog 0 → 100
	clk.add(10 * time.Second)
	e.ProcessAll(t)                                            // 100 drained in the 10 s: 10 a second
	bt.Accepted(t, e.Post(t, bt.AdminKey, receivers(100, ""))) // the reading sees 0: admitted
	clk.add(time.Second)
	// The reading sees 100 due (none drained since, which the rate
	// smooths): 30 more would be 30 past the bound.
	r := e.Post(t, bt.AdminKey, receivers(30, ""))
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("30 past the bound: %d %s", r.Status, r.Raw)
	}
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	// 10/s the first reading, then 0/s over a second: 7/s smoothed; 30
	// past the bound is about 5 s of draining.
	if err != nil || ra < 3 || ra > 8 {
		t.Errorf("Retry-After %q, want about 5 s (30 recipients at about 7 a second)", r.Header.Get("Retry-After"))
	}
	if !strings.Contains(r.Error.Message, "retry in") {
		t.Errorf("the message does not say when to retry: %s", r.Error.Message)
	}
}
