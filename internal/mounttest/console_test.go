package mounttest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// The operator's console (issue 22) in a real browser: the dashboard
// mounted with net/http at the root, on a Service over memstore whose
// queue is a Redis in-process (miniredis), as a host runs it.

// console is a host with the API and the dashboard on a real server, its
// Service on Redis with no worker until the test starts one (Run).
type console struct {
	svc   *batch.Service
	fs    *bt.FailingStore
	redis asynq.RedisConnOpt
	cfg   batch.Config
	srv   *httptest.Server
}

func newConsole(t *testing.T, mutate func(*batch.Config)) *console {
	t.Helper()
	mem := memstore.New(nil)
	bt.SeedDirectory(t, mem)
	c := &console{fs: &bt.FailingStore{Store: mem, Fail: map[string]int{}}, redis: asynq.RedisClientOpt{Addr: miniredis.RunT(t).Addr()}}
	c.cfg = bt.BaseConfig(t, c.fs, deliverytest.NewRecorder())
	c.cfg.Redis = c.redis
	c.cfg.ServerConfig = bt.FastServer()
	c.cfg.SweepInterval = time.Hour // the test decides what runs again
	if mutate != nil {
		mutate(&c.cfg)
	}
	svc, err := batch.New(c.cfg)
	bt.Must(t, err)
	t.Cleanup(func() { _ = svc.Close() })
	c.svc = svc
	h, err := netHTTPAtRoot(svc) // docs/embedding.md's mount
	bt.Must(t, err)
	c.srv = httptest.NewServer(h)
	t.Cleanup(c.srv.Close)
	return c
}

func (c *console) api() string  { return c.srv.URL + "/messages/batch" }
func (c *console) dash() string { return c.srv.URL + "/admin/batches/" }

// run starts the Service's worker (asynq server and sweeps) until the
// test ends.
func (c *console) run(t *testing.T) { bt.Run(t, c.svc) }

// signIn opens view of the dashboard and uses the admin key.
func (c *console) signIn(t *testing.T, ctx context.Context, view string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(c.dash()+view),
		chromedp.WaitVisible(chromedp.CSS(`#api-key`)),
		chromedp.SetValue(chromedp.CSS(`#api-key`), bt.AdminKey),
		chromedp.Click(chromedp.CSS(`#key-save`)),
		chromedp.WaitVisible(chromedp.CSS(`#stream-status[data-state="connected"]`)),
	)
	if err != nil {
		t.Fatalf("opening the dashboard at %s%s: %v", c.dash(), view, err)
	}
}

// screenshot saves the page, w×h, as docs/screenshots/name when
// CHATBATCH_SCREENSHOTS names that directory:
//
//	CHATBATCH_SCREENSHOTS=$PWD/docs/screenshots go test -run TestConsole ./internal/mounttest/
func screenshot(t *testing.T, ctx context.Context, name string, w, h int64, scrollTo string) {
	t.Helper()
	dir := os.Getenv("CHATBATCH_SCREENSHOTS")
	if dir == "" {
		return
	}
	scroll := `window.scrollTo(0, 0)`
	if scrollTo != "" {
		scroll = fmt.Sprintf(`window.scrollTo(0, document.querySelector(%q).getBoundingClientRect().top + window.scrollY - 12)`, scrollTo)
	}
	bt.Must(t, chromedp.Do(ctx, chromedp.EmulateViewport(w, h), chromedp.Sleep(300*time.Millisecond)))
	_, err := chromedp.Run(ctx, chromedp.Evaluate[any](scroll))
	bt.Must(t, err)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	bt.Must(t, err)
	bt.Must(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
	t.Logf("%s: %d bytes", name, len(png))
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// pageText is what the page shows in sel, for a failure's message.
func pageText(ctx context.Context, sel string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)))
	if err != nil {
		return err.Error()
	}
	return s
}

func evaluate[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// theCSV is a spreadsheet's export: a byte order mark, CRLF, a quoted
// field with a comma and doubled quotes, one with a line break; line 4's
// receiver does not exist and line 5 has none.
const theCSV = "\ufeffreceiver,name,$code$\r\n" +
	"user-a,\"Alice \"\"Al\"\" Smith, Jr.\",A-1\r\n" +
	"user-b,Bob,B-2\r\n" +
	"ghost,Ghost,G-3\r\n" +
	",Nobody,N-4\r\n" +
	"user-c,\"Carol\r\non two lines\",C-5\r\n"

// TestConsoleComposeFromCSV: a campaign composed from the form and an
// uploaded CSV (BOM, quoted fields): the preview renders the good rows
// through the dry run and locates the bad ones by CSV line (a receiver
// that does not exist, from the API's paras[i]; a line without a
// receiver, found by the page); Send refuses while they stand; once
// fixed, Send — clicked twice — sends one batch (one Idempotency-Key per
// composed request), whose detail, opened from its link, shows its
// content and creator and, once a worker ran, its rooms by name.
func TestConsoleComposeFromCSV(t *testing.T) {
	t.Parallel()
	c := newConsole(t, func(c *batch.Config) { c.ChunkSize = 2 })
	ctx := browser(t, 120*time.Second)
	c.signIn(t, ctx, "#/compose")
	file := filepath.Join(t.TempDir(), "campaign.csv")
	bt.Must(t, os.WriteFile(file, []byte(theCSV), 0o644))
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#form-composer`)),
		chromedp.SetValue(chromedp.CSS(`#f-message`), "Hi $name$, your code is $code$"),
		chromedp.Click(chromedp.CSS(`#f-push`)),
		chromedp.SetValue(chromedp.CSS(`#f-extra`), `{"coupon": "$code$"}`),
		chromedp.SetUploadFiles(chromedp.CSS(`#f-file`), []string{file}),
		chromedp.WaitVisible(`//span[@id="f-rows" and text()="4 recipients"]`),
		chromedp.Click(chromedp.CSS(`#f-preview`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-preview-rows tr[data-line="6"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-problems li[data-line="4"]`)),
	)
	if err != nil {
		t.Fatalf("previewing the CSV: %v", err)
	}
	rows := evaluate[[][]string](t, ctx, `[...document.querySelectorAll("#f-preview-rows tr")].map((tr) => [...tr.cells].map((td) => td.textContent))`)
	want := [][]string{
		{"2", "user-a", `Hi Alice "Al" Smith, Jr., your code is A-1`},
		{"3", "user-b", "Hi Bob, your code is B-2"},
		{"6", "user-c", "Hi Carol\non two lines, your code is C-5"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("preview rows %q, want %q", rows, want)
	}
	problems := evaluate[[]string](t, ctx, `[...document.querySelectorAll("#f-problems li")].map((li) => li.textContent)`)
	if len(problems) != 2 || problems[0] != "line 4: receiver “ghost”: no such user" || problems[1] != "line 5: no receiver or room" {
		t.Errorf("problems %q", problems)
	}
	screenshot(t, ctx, "console-compose.png", 1280, 1000, "")

	// Send with the bad lines: refused by the page, nothing sent.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#f-send`)),
		chromedp.WaitVisible(`//div[@id="f-errors"]//strong[contains(., "nothing was sent")]`),
	)
	if err != nil {
		t.Fatalf("sending with bad lines: %v", err)
	}
	if l := decode[batchList](t, call(t, "GET", c.api(), bt.AdminKey, "")); len(l.Batches) != 0 {
		t.Fatalf("a batch was sent with bad lines: %+v", l.Batches)
	}

	// Fixed: a receiver that exists on line 4, one on line 5.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { const t = document.getElementById("f-csv");
		t.value = t.value.replace("ghost,", "user-d,").replace("\n,Nobody", "\nsystem,Nobody"); })()`))
	bt.Must(t, err)
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#f-preview`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-preview-rows tr[data-line="6"]`)),
		chromedp.DoubleClick(chromedp.CSS(`#f-send`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-result[data-replayed="false"]`)),
	)
	if err != nil {
		t.Fatalf("sending the fixed CSV: %v", err)
	}
	if shown := textOf(t, ctx, `#f-errors`); shown != "" {
		t.Errorf("errors still shown after the fix: %q", shown)
	}
	id := evaluate[string](t, ctx, `document.getElementById("f-result").dataset.batch`)
	// Send once more: the same composed request, the same batch.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#f-send`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-result[data-replayed="true"]`)),
	)
	if err != nil {
		t.Fatalf("sending again: %v", err)
	}
	if l := decode[batchList](t, call(t, "GET", c.api(), bt.AdminKey, "")); len(l.Batches) != 1 || l.Batches[0].BatchID != id || l.Batches[0].Count != 5 {
		t.Fatalf("after a double click and a second Send: %+v, want one batch %s of 5", l.Batches, id)
	}

	// The batch's detail, from the link: its content and creator.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#f-result-link`)),
		chromedp.WaitVisible(chromedp.CSS(`#d-content`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="queued"]`),
	)
	if err != nil {
		t.Fatalf("opening the batch: %v", err)
	}
	if loc := evaluate[string](t, ctx, `location.hash`); loc != "#/batches/"+id {
		t.Errorf("the detail's URL is %q", loc)
	}
	for sel, want := range map[string]string{
		"#d-id": id, "#d-message": "Hi $name$, your code is $code$", "#d-type": "text", "#d-sender": "system",
		"#d-created-by": "an operator (API key)", "#d-push": "yes", "#d-send-at": "at once", "#d-rate": "as fast as the workers go",
	} {
		if got := textOf(t, ctx, sel); got != want {
			t.Errorf("%s = %q, want %q", sel, got, want)
		}
	}
	if extra := textOf(t, ctx, `#d-extra`); !strings.Contains(extra, `"coupon": "$code$"`) {
		t.Errorf("extra %q", extra)
	}
	// A worker sends it; the rooms are named by their users.
	c.run(t)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`//span[@id="d-status" and text()="completed"]`),
		chromedp.WaitVisible(`//table[@id="recipients"]//tr[td[2]="user-a"]/td[3][text()="system ↔ user-a"]`),
		chromedp.WaitVisible(`//table[@id="recipients"]//tr[td[2]="user-c"]//span[text()="sent"]`),
	)
	if err != nil {
		t.Fatalf("waiting for the batch to complete: %v", err)
	}
	screenshot(t, ctx, "console-batch.png", 1280, 1100, "#detail")
}

// TestConsoleHistoryAndQueue: the history pages through every batch with
// the list's cursor (23 batches, 20 a page), filters by status and by
// creation date, and opens a batch by ID (and refuses an unknown one);
// a batch's URL opens its detail in a new page; the queue view shows a
// chunk that asynq archived after the store failed it — live — and runs
// it again from the page, after which the batch completes.
func TestConsoleHistoryAndQueue(t *testing.T) {
	t.Parallel()
	c := newConsole(t, func(c *batch.Config) { c.MaxRetry = 1 })
	later := time.Now().Add(3 * time.Hour).UTC().Format(time.RFC3339)
	var ids []string // oldest first
	for i := range 23 {
		r := bt.Accepted(t, call(t, "POST", c.api(), bt.AdminKey,
			fmt.Sprintf(`{"message":"Campaign %d","messageType":"text","sendAt":%q,"paras":[{"room":"room-001"},{"receiver":"user-a"}]}`, i, later)))
		ids = append(ids, r.BatchID)
	}
	for _, i := range []int{1, 2, 20} {
		call(t, "DELETE", c.api()+"/"+ids[i], bt.AdminKey, "")
	}
	ctx := browser(t, 120*time.Second)
	c.signIn(t, ctx, "#/history")
	historyIDs := func() []string {
		return evaluate[[]string](t, ctx, `[...document.querySelectorAll("#h-table tbody tr")].map((tr) => tr.dataset.batch)`)
	}
	err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#h-limit`), "20"),
		chromedp.Click(chromedp.CSS(`#h-apply`)),
		// The page opened with the default limit (50) shows all 23: wait
		// for the table of 20, not for a 20th row the old one also has.
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#h-table tbody tr").length === 20`),
	)
	if err != nil {
		t.Fatalf("the history's first page: %v", err)
	}
	first := historyIDs()
	if len(first) != 20 || first[0] != ids[22] || first[19] != ids[3] {
		t.Fatalf("first page %v", first)
	}
	screenshot(t, ctx, "console-history.png", 1280, 900, "")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#h-older`)),
		chromedp.WaitVisible(fmt.Sprintf(`//table[@id="h-table"]//tr[@data-batch=%q]`, ids[0])),
	)
	if err != nil {
		t.Fatalf("the second page: %v", err)
	}
	if second := historyIDs(); fmt.Sprint(second) != fmt.Sprint([]string{ids[2], ids[1], ids[0]}) {
		t.Errorf("second page %v", second)
	}
	if older := evaluate[bool](t, ctx, `document.getElementById("h-older").disabled`); !older {
		t.Errorf("Older is enabled on the last page")
	}
	if hash := evaluate[string](t, ctx, `location.hash`); !strings.Contains(hash, "cursor=") {
		t.Errorf("the second page's URL %q has no cursor", hash)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#h-newer`)),
		chromedp.WaitVisible(fmt.Sprintf(`//table[@id="h-table"]//tr[@data-batch=%q]`, ids[22])),
	)
	if err != nil || fmt.Sprint(historyIDs()) != fmt.Sprint(first) {
		t.Fatalf("back to the first page: %v %v", err, historyIDs())
	}

	// Filters: canceled only; created today (all), from tomorrow (none).
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#h-filters input[value="canceled"]`)),
		chromedp.Click(chromedp.CSS(`#h-apply`)),
		chromedp.WaitNotPresent(fmt.Sprintf(`//table[@id="h-table"]//tr[@data-batch=%q]`, ids[22])),
	)
	if err != nil {
		t.Fatalf("filtering by status: %v", err)
	}
	if got := historyIDs(); fmt.Sprint(got) != fmt.Sprint([]string{ids[20], ids[2], ids[1]}) {
		t.Errorf("canceled: %v", got)
	}
	if statuses := evaluate[[]string](t, ctx, `[...document.querySelectorAll("#h-table tbody tr")].map((tr) => tr.dataset.status)`); strings.Join(statuses, ",") != "canceled,canceled,canceled" {
		t.Errorf("statuses %v", statuses)
	}
	if hash := evaluate[string](t, ctx, `location.hash`); hash != "#/history?status=canceled&limit=20" {
		t.Errorf("the filter's URL is %q", hash)
	}
	today := evaluate[string](t, ctx, `(() => { const d = new Date(); return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0"); })()`)
	tomorrow := evaluate[string](t, ctx, `(() => { const d = new Date(Date.now() + 86400000); return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0"); })()`)
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#h-from`), today),
		chromedp.SetValue(chromedp.CSS(`#h-to`), today),
		chromedp.Click(chromedp.CSS(`#h-apply`)),
		chromedp.WaitVisible(chromedp.CSS(`#h-table tbody tr:nth-child(3)`)),
	)
	if err != nil || len(historyIDs()) != 3 {
		t.Fatalf("created today: %v %v", err, historyIDs())
	}
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#h-from`), tomorrow),
		chromedp.SetValue(chromedp.CSS(`#h-to`), ""),
		chromedp.Click(chromedp.CSS(`#h-apply`)),
		chromedp.WaitVisible(chromedp.CSS(`#h-empty`)),
	)
	if err != nil || len(historyIDs()) != 0 {
		t.Fatalf("created from tomorrow: %v %v", err, historyIDs())
	}

	// Look-up by ID: an unknown one is refused, a known one opens.
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#h-id`), "batch-20260101-nope"),
		chromedp.Click(chromedp.CSS(`#h-open`)),
		chromedp.WaitVisible(chromedp.CSS(`#h-lookup-error[data-code="BATCH_NOT_FOUND"]`)),
		chromedp.SetValue(chromedp.CSS(`#h-id`), " "+ids[5]+" "),
		chromedp.Click(chromedp.CSS(`#h-open`)),
		chromedp.WaitVisible(fmt.Sprintf(`//code[@id="d-id" and text()=%q]`, ids[5])),
		chromedp.WaitVisible(`//div[@id="d-message" and text()="Campaign 5"]`),
	)
	if err != nil {
		t.Fatalf("looking up a batch by ID: %v", err)
	}
	// A batch's URL, loaded anew, opens its detail.
	err = chromedp.Do(ctx,
		chromedp.Navigate("about:blank"),
		chromedp.Navigate(c.dash()+"#/batches/"+ids[20]),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="canceled"]`),
		chromedp.WaitVisible(`//div[@id="d-message" and text()="Campaign 20"]`),
		chromedp.WaitVisible(`//table[@id="recipients"]//tr[td[3]="room-001"]//span[text()="canceled"]`),
	)
	if err != nil {
		t.Fatalf("opening a batch's URL: %v", err)
	}

	// The queue: the store fails every chunk until asynq archives it.
	c.fs.Mu.Lock()
	c.fs.Fail["StartChunk"] = -1
	c.fs.Mu.Unlock()
	c.run(t)
	id := bt.Accepted(t, call(t, "POST", c.api(), bt.AdminKey, bt.TwoReceivers)).BatchID
	task := id + ":0"
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = chromedp.Do(wctx,
		chromedp.Navigate(c.dash()+"#/queue"),
		chromedp.WaitVisible(fmt.Sprintf(`//table[@id="q-archived"]//tr[@data-task=%q]`, task)),
		chromedp.WaitVisible(chromedp.CSS(`#q-cards .card.archived[data-value="1"]`)),
		chromedp.WaitVisible(fmt.Sprintf(`//div[@id="q-card-workers"]/div[@class="value" and text()="0 / %d"]`, batch.DefaultConcurrency)),
	)
	if err != nil {
		t.Fatalf("the queue view: %v\n%s", err, pageText(ctx, "#queue"))
	}
	if e := textOf(t, ctx, fmt.Sprintf(`#q-archived tr[data-task=%q]`, task)); !strings.Contains(e, "StartChunk") || !strings.Contains(e, "1 / 1") {
		t.Errorf("the archived chunk's row: %q", e)
	}
	screenshot(t, ctx, "console-queue.png", 1280, 760, "")
	// The database is back: re-run it from the page.
	c.fs.Mu.Lock()
	c.fs.Fail["StartChunk"] = 0
	c.fs.Mu.Unlock()
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#q-archived tr[data-task=%q] button.run`, task))),
		chromedp.WaitVisible(`//div[@id="q-action-result"]/p[contains(., "pending")]`),
		chromedp.WaitVisible(chromedp.CSS(`#q-cards .card.archived[data-value="0"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#q-archived-empty`)),
	)
	if err != nil {
		t.Fatalf("re-running the archived chunk: %v", err)
	}
	bt.WaitUntil(t, func() bool {
		return decode[bt.BatchStatus](t, call(t, "GET", c.api()+"/"+id, bt.AdminKey, "")).Status == "completed"
	})
	// A principal that is not an admin sees why there is no queue.
	if r := call(t, http.MethodGet, c.api()+"/-/queue", bt.UserKey, ""); r.Status != 403 {
		t.Errorf("the queue for a key that is not an admin's: %d", r.Status)
	}
}
