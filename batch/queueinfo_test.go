package batch_test

import (
	"net/http"
	"strings"
	"testing"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// TestQueueRoutes: the queue's endpoints sit at BasePath/-/queue (no
// batch ID is "-"), for admin principals only; a Service without
// Config.Redis (an Enqueuer only) has no queue to show: 501. Their
// behaviour on Redis is internal/integration's TestQueueHealth.
func TestQueueRoutes(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	for _, c := range []struct {
		method, path, key string
		status            int
		code, msg         string
	}{
		{"GET", "/messages/batch/-/queue", bt.AdminKey, 501, "NOT_SUPPORTED", "Config.Redis"},
		{"HEAD", "/messages/batch/-/queue", bt.AdminKey, 501, "NOT_SUPPORTED", ""},
		{"POST", "/messages/batch/-/queue/tasks/batch-x:0/run", bt.AdminKey, 501, "NOT_SUPPORTED", ""},
		{"GET", "/messages/batch/-/queue", bt.UserKey, 403, "INSUFFICIENT_PERMISSIONS", "only admin principals"},
		{"POST", "/messages/batch/-/queue/tasks/batch-x:0/run", bt.UserKey, 403, "INSUFFICIENT_PERMISSIONS", ""},
		{"GET", "/messages/batch/-/queue", "nope", 401, "INVALID_API_KEY", ""},
		{"GET", "/messages/batch/-/queue?limit=0", bt.AdminKey, 400, "INVALID_PARAMETER", "limit"},
		{"GET", "/messages/batch/-/queue?offset=1", bt.AdminKey, 400, "INVALID_PARAMETER", "offset"},
		{"POST", "/messages/batch/-/queue/tasks/batch-x:0/run?now=1", bt.AdminKey, 400, "INVALID_PARAMETER", "now"},
		{"POST", "/messages/batch/-/queue/tasks/%00/run", bt.AdminKey, 404, "TASK_NOT_FOUND", ""},
		{"DELETE", "/messages/batch/-/queue", bt.AdminKey, 405, "METHOD_NOT_ALLOWED", "GET, HEAD"},
		{"GET", "/messages/batch/-/queue/tasks/batch-x:0/run", bt.AdminKey, 405, "METHOD_NOT_ALLOWED", "POST"},
		{"GET", "/messages/batch/-", bt.AdminKey, 404, "NOT_FOUND", ""},
		{"GET", "/messages/batch/-/queues", bt.AdminKey, 404, "NOT_FOUND", ""},
		{"GET", "/messages/batch/-/recipients", bt.AdminKey, 404, "NOT_FOUND", ""},
		{"POST", "/messages/batch/-/queue/tasks//run", bt.AdminKey, 404, "NOT_FOUND", ""},
		{"POST", "/messages/batch/-/queue/tasks/a/b/run", bt.AdminKey, 404, "NOT_FOUND", ""},
		{"POST", "/messages/batch/-/queue/tasks/a", bt.AdminKey, 404, "NOT_FOUND", ""},
	} {
		r := e.Do(t, c.method, c.path, c.key, "", nil)
		if r.Status != c.status {
			t.Errorf("%s %s = %d %s, want %d", c.method, c.path, r.Status, r.Raw, c.status)
			continue
		}
		if c.method == http.MethodHead {
			continue
		}
		if r.Error == nil || r.Error.Code != c.code || !strings.Contains(r.Error.Message, c.msg) {
			t.Errorf("%s %s = %s, want %s %q", c.method, c.path, r.Raw, c.code, c.msg)
		}
	}
	if _, err := e.Svc.QueueStats(t.Context(), bt.TestApp, 0); err == nil {
		t.Errorf("QueueStats without Redis succeeded")
	}
}
