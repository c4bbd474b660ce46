package batch_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// processAt returns the ProcessAt option of an enqueued task, or zero.
func processAt(q bt.Enqueued) time.Time {
	for _, o := range q.Opts {
		if o.Type() == asynq.ProcessAtOpt {
			return o.Value().(time.Time)
		}
	}
	return time.Time{}
}

// ratePerMinute paces a batch: chunks of at most a minute's worth, due a
// minute apart, and the status says when it will end.
func TestThrottledSend(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	e := bt.NewEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return now } })
	body := `{"message":"m","messageType":"text","ratePerMinute":2,"paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"room":"room-001"},{"room":"room-002"}]}`

	r := e.Do(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, bt.JSONContentType, strings.NewReader(body))
	var dry struct {
		Chunks            int       `json:"chunks"`
		RatePerMinute     int       `json:"ratePerMinute"`
		EstimatedFinishAt time.Time `json:"estimatedFinishAt"`
	}
	bt.Must(t, json.Unmarshal(r.Result, &dry))
	if r.Status != 200 || dry.Chunks != 3 || dry.RatePerMinute != 2 || !dry.EstimatedFinishAt.Equal(now.Add(150*time.Second)) {
		t.Errorf("dry run %d %s", r.Status, r.Raw)
	}

	id := bt.Accepted(t, e.Post(t, bt.AdminKey, body)).BatchID
	tasks := e.Enq.All()
	if len(tasks) != 3 {
		t.Fatalf("%d tasks, want 3 chunks of at most 2", len(tasks))
	}
	for i, q := range tasks {
		want := now.Add(time.Duration(i) * time.Minute)
		c, err := e.St.LoadChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: id, No: i})
		bt.Must(t, err)
		if !c.NotBefore.Equal(want) {
			t.Errorf("chunk %d is due %v, want %v", i, c.NotBefore, want)
		}
		// Chunk 0 is due now: no ProcessAt; the later ones are scheduled.
		if at := processAt(q); (i == 0 && !at.IsZero()) || (i > 0 && !at.Equal(want)) {
			t.Errorf("task %d ProcessAt %v, want %v", i, at, want)
		}
	}
	r, st := e.Status(t, bt.AdminKey, id)
	var est struct {
		EstimatedFinishAt *time.Time `json:"estimatedFinishAt"`
	}
	bt.Must(t, json.Unmarshal(r.Result, &est))
	if est.EstimatedFinishAt == nil || !est.EstimatedFinishAt.Equal(now.Add(150*time.Second)) {
		t.Errorf("estimatedFinishAt %v, want 2.5 minutes after the start", est.EstimatedFinishAt)
	}
	var list struct {
		Batches []struct {
			EstimatedFinishAt *time.Time `json:"estimatedFinishAt"`
		} `json:"batches"`
	}
	bt.Must(t, json.Unmarshal(e.Do(t, http.MethodGet, "/messages/batch", bt.AdminKey, "", nil).Result, &list))
	if len(list.Batches) != 1 || list.Batches[0].EstimatedFinishAt == nil || !list.Batches[0].EstimatedFinishAt.Equal(*est.EstimatedFinishAt) {
		t.Errorf("the list does not show the status's estimatedFinishAt: %+v", list.Batches)
	}

	// Cancel and recall work on a throttled batch: the first chunk went
	// out, the others were waiting for their minute.
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[0].Task))
	r, st = e.Recall(t, bt.AdminKey, id)
	if r.Status != 200 || st.Recalled != 2 || st.Canceled != 3 || st.Pending != 0 {
		t.Errorf("recall of the throttled batch: %d %s", r.Status, r.Raw)
	}
	r, _ = e.Status(t, bt.AdminKey, id)
	if strings.Contains(r.Raw, "estimatedFinishAt") {
		t.Errorf("a finished batch still shows estimatedFinishAt: %s", r.Raw)
	}
}

func TestThrottleLimits(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.MaxRatePerMinute = 10
		c.MaxScheduleAhead = time.Hour
	})
	paras := func(n int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = `{"receiver":"user-a"}`
		}
		return strings.Join(p, ",")
	}
	for _, c := range []struct {
		extra string
		n     int
		want  string
	}{
		{`"ratePerMinute":0,`, 1, "is not a whole number of at least 1"},
		{`"ratePerMinute":-5,`, 1, "is not a whole number of at least 1"},
		{`"ratePerMinute":1.5,`, 1, "is not a whole number of at least 1"},
		{`"ratePerMinute":"60",`, 1, "must be a whole number of at least 1"},
		{`"ratePerMinute":2147483648,`, 1, "2147483648 is too large: the most is 2147483647"},
		{`"ratePerMinute":1e12,`, 1, "is not a whole number of at least 1"},
		{`"ratePerMinute":-2147483649,`, 1, "is not a whole number of at least 1"},
		{`"ratePerMinute":11,`, 1, "above this server's maximum of 10"},
		{`"ratePerMinute":1,`, 61, "more than 1h0m0s ahead"},
		{`"throttle_rate_per_minute":5,`, 1, `did you mean "ratePerMinute"`},
	} {
		r := e.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"m","messageType":"text",%s"paras":[%s]}`, c.extra, paras(c.n)))
		if r.Status != 400 || r.Error == nil || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("%s with %d paras: %d %s, want 400 %q", c.extra, c.n, r.Status, r.Raw, c.want)
		}
	}
	// A throttled batch is canceled like any other: the chunks not yet
	// due never go out.
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"m","messageType":"text","ratePerMinute":2,"paras":[%s]}`, paras(5)))).BatchID
	first := e.Enq.All()[len(e.Enq.All())-3]
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), first.Task))
	if r, st := e.Cancel(t, bt.AdminKey, id); r.Status != 200 || st.Sent != 2 || st.Canceled != 3 || st.Status != "canceled" {
		t.Errorf("cancel of a throttled batch: %d %s", r.Status, r.Raw)
	}

	// Without ratePerMinute the maximum paces the batch.
	before := len(e.Enq.All())
	bt.Accepted(t, e.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"m","messageType":"text","paras":[%s]}`, paras(25))))
	if n := len(e.Enq.All()) - before; n != 3 {
		t.Errorf("25 recipients at the maximum of 10 a minute: %d chunks, want 3", n)
	}
}
