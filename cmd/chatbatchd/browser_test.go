package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/internal/browsertest"
	"github.com/chatbatch/chatbatch/internal/seed"
)

// browser starts a headless Chromium for the test, its window w×h.
func browser(t *testing.T, timeout time.Duration, w, h int) context.Context {
	return browsertest.New(t, timeout, w, h)
}

// openDashboard loads the page of a -demo chatbatchd: the demo key is
// prefilled and used, and the batch stream connects.
func openDashboard(t *testing.T, ctx context.Context, p *proc) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(p.url+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#batches`)),
		chromedp.WaitVisible(chromedp.CSS(`#stream-status[data-state="connected"]`)),
	)
	if err != nil {
		t.Fatalf("opening the dashboard: %v\nserver log:\n%s", err, p.stderr)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

// TestDashboardLiveMessages watches user-a in the live view: rooms with
// readable names, a batch sent over HTTP arriving live, the new
// one-on-one room listed as "system ↔ user-a", a batch sent from the
// composer completing in the detail view, and its recall taking the
// message off the page (the stream's retraction event).
func TestDashboardLiveMessages(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 90*time.Second, 1280, 900)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	openDashboard(t, ctx, p)
	err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#live-user`), "user-a"),
		chromedp.Click(chromedp.CSS(`#live-watch`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-status[data-state="connected"]`)),
		chromedp.WaitVisible(`//ul[@id="rooms"]/li[text()="room-003 (user-a, user-b, user-c)"]`),
	)
	if err != nil {
		t.Fatalf("watching user-a: %v\nserver log:\n%s", err, p.stderr)
	}

	// A batch sent by someone else arrives live, in a room new to the list.
	sendAndWait(t, p.url, "demo-key", seed.Template)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`//ol[@id="messages"]/li[contains(., "Hi Alice,您的訂單 ORD-001 已出貨!")]`),
		chromedp.WaitVisible(`//ul[@id="rooms"]/li[text()="system ↔ user-a"]`),
		chromedp.WaitVisible(`//ol[@id="messages"]/li//span[@class="room" and text()="system ↔ user-a"]`),
	)
	if err != nil {
		t.Fatalf("waiting for the live message and its room: %v", err)
	}
	if msgs := text(t, ctx, `#messages`); strings.Contains(msgs, "Bob") {
		t.Errorf("user-a's view shows user-b's message: %q", msgs)
	}

	// A rich message (-extra-fields' defaults) shows its type and fields,
	// as text: markup in a field is shown, never made an element.
	sendAndWait(t, p.url, "demo-key", `{"message":"a photo","messageType":"image","originalUrl":"https://cdn.example.com/a.jpg",`+
		`"sticker":"<img src=x onerror=alert(1)>","paras":[{"receiver":"user-a"}]}`)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`//ol[@id="messages"]/li[contains(., "a photo")]//span[@class="type" and text()="image"]`),
		chromedp.WaitVisible(`//ol[@id="messages"]/li[contains(., "a photo")]//ul[@class="fields"]/li[span[@class="field" and text()="originalUrl"] and contains(., '"https://cdn.example.com/a.jpg"')]`),
		chromedp.WaitVisible(`//ol[@id="messages"]/li[contains(., "a photo")]//ul[@class="fields"]/li[contains(., "<img src=x onerror=alert(1)>")]`),
	)
	if err != nil {
		t.Fatalf("waiting for the rich message's type and fields: %v", err)
	}
	if imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages img").length`)); err != nil || imgs != 0 {
		t.Errorf("the live view holds %d img elements (err %v); want none", imgs, err)
	}

	// The composer's example (the seed's) goes out; the detail follows it
	// to completed, and the second message shows up.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="completed"]`),
		chromedp.WaitVisible(`//ol[@id="messages"]/li[3]`), // the seed's, the photo, this one
	)
	if err != nil {
		t.Fatalf("sending from the composer: %v", err)
	}
	id := text(t, ctx, `#d-id`)
	if sent := text(t, ctx, `#d-sent`); sent != "2" {
		t.Errorf("detail of %s: sent %q, want 2", id, sent)
	}
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`//table[@id="recipients"]//tr[td[2]="user-b"]//span[text()="sent"]`),
		chromedp.Click(chromedp.CSS(`#recall`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="recalled"]`),
		chromedp.WaitNotPresent(chromedp.CSS(fmt.Sprintf(`#messages li[data-id="%s-0"]`, id))),
	)
	if err != nil {
		t.Fatalf("recalling %s from the detail: %v", id, err)
	}
	if msgs := text(t, ctx, `#messages`); strings.Count(msgs, "Hi Alice") != 1 {
		t.Errorf("after the recall, the view shows %q; want the first message only", msgs)
	}
}

type barState struct {
	Progress string `json:"progress"`
	Status   string `json:"status"`
	Rate     string `json:"rate"`
}

// TestDashboardProgress: a 5,000-recipient batch, paced to ten chunks a
// second apart, moves its bar through values strictly between 0 and
// 100 % to 100 %, with an ETA while it runs — pushed by the dashboard's
// event stream, not polled by the page.
func TestDashboardProgress(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 120*time.Second, 1280, 900)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:",
		"-concurrency", "1", "-task-check-interval", "20ms")
	openDashboard(t, ctx, p)
	body := strings.Replace(bigBatch(5000), `{"messageType"`, `{"ratePerMinute":30000,"messageType"`, 1)
	status, env := call(t, http.MethodPost, p.url+"/messages/batch", "demo-key", body)
	if status != 200 {
		t.Fatalf("POST = %d %+v", status, env)
	}
	var res struct{ BatchID string }
	must(t, json.Unmarshal(env.Result, &res))
	row := fmt.Sprintf(`tr[data-batch="%s"]`, res.BatchID)
	seen := map[int]bool{}
	var order []int
	eta := false
	deadline := time.Now().Add(60 * time.Second)
	for {
		js := fmt.Sprintf(`(() => { const r = document.querySelector(%q); return r ? {progress: r.dataset.progress, status: r.dataset.status, rate: r.querySelector(".rate").textContent} : {}; })()`, row)
		state, err := chromedp.Run(ctx, chromedp.Evaluate[barState](js))
		must(t, err)
		if state.Progress != "" {
			var v int
			fmt.Sscan(state.Progress, &v)
			if !seen[v] {
				seen[v] = true
				order = append(order, v)
			}
			if state.Status == "running" && strings.Contains(state.Rate, "ETA") {
				eta = true
			}
			if v == 100 && state.Status == "completed" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bar of %s did not reach 100 %% completed within 60 s; values %v, last %+v\n%s", res.BatchID, order, state, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	between := 0
	for v := range seen {
		if v > 0 && v < 100 {
			between++
		}
	}
	if between == 0 {
		t.Errorf("the bar showed no value strictly between 0 and 100 %%: %v", order)
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Errorf("the bar went backwards: %v", order)
		}
	}
	if !eta {
		t.Errorf("no ETA shown while the paced batch ran")
	}
	t.Logf("bar values: %v", order)
}

// TestDashboardComposer: a dry run shows the rendered preview; bad
// requests show their error message and details, not raw JSON; a
// scheduled batch sent from the composer is canceled from its detail.
func TestDashboardComposer(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 90*time.Second, 1280, 900)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	openDashboard(t, ctx, p)

	err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#dry-run`)),
		chromedp.WaitVisible(`//tbody[@id="preview-rows"]/tr[td[3]="Hi Alice,您的訂單 ORD-001 已出貨!"]`),
		chromedp.WaitVisible(`//tbody[@id="preview-rows"]/tr[td[2]="user-b" and td[3]="Hi Bob,您的訂單 ORD-002 已出貨!"]`),
	)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if s := text(t, ctx, `#preview-summary`); !strings.Contains(s, "2 recipients in 1 chunk, sent as system") {
		t.Errorf("preview summary %q", s)
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#batches tbody tr").length`))
	must(t, err)
	if n != 0 {
		t.Errorf("a dry run left %d batches in the list", n)
	}

	for _, c := range []struct{ body, code, want string }{
		{`{"messageType":"text","message":"hi","paras":[{"receiver":"ghost"},{"receiver":"user-a"},{"receiver":"nobody"}]}`,
			"CLIENT_NOT_FOUND", "no such user"},
		{`{"messageType":"text","message":"hi",`, "INVALID_BODY", ""},
		{`{"messageType":"text","message":"hi","paras":[]}`, "MISSING_PARAMETER", ""},
	} {
		err := chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS(`#body`), c.body),
			chromedp.Click(chromedp.CSS(`#send`)),
			chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#compose-error[data-code=%q]`, c.code))),
		)
		if err != nil {
			t.Fatalf("sending %s: want %s shown: %v", c.body, c.code, err)
		}
		shown := text(t, ctx, `#compose-error`)
		if strings.Contains(shown, `"RC"`) || strings.Contains(shown, "{") || !strings.Contains(shown, c.want) || len(shown) < 15 {
			t.Errorf("the error of %s is shown as %q", c.body, shown)
		}
		if c.code == "CLIENT_NOT_FOUND" && (!strings.Contains(shown, "paras[0].receiver “ghost”: no such user") || !strings.Contains(shown, "paras[2].receiver “nobody”")) {
			t.Errorf("the details of CLIENT_NOT_FOUND are shown as %q", shown)
		}
	}

	at := time.Now().Add(time.Hour).UnixMilli()
	err = chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#body`), fmt.Sprintf(`{"messageType":"text","message":"later","sendAt":%d,"paras":[{"room":"room-003"}]}`, at)),
		chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="scheduled"]`),
		chromedp.WaitVisible(chromedp.CSS(`#batches tr[data-status="scheduled"]`)),
		chromedp.Click(chromedp.CSS(`#cancel`)),
		chromedp.WaitVisible(`//span[@id="d-status" and text()="canceled"]`),
		chromedp.WaitVisible(chromedp.CSS(`#batches tr[data-status="canceled"]`)),
		chromedp.WaitVisible(`//table[@id="recipients"]//tr[td[3]="room-003"]//span[text()="canceled"]`),
	)
	if err != nil {
		t.Fatalf("canceling a scheduled batch: %v", err)
	}
	if hidden := text(t, ctx, `#compose-error`); hidden != "" {
		t.Errorf("an old error is still shown: %q", hidden)
	}
}

// TestDashboardScreenshots captures the documentation's screenshots into
// $CHATBATCH_SCREENSHOTS (docs/screenshots) — run by hand:
//
//	CHATBATCH_SCREENSHOTS=$PWD/docs/screenshots go test -run TestDashboardScreenshots ./cmd/chatbatchd/
func TestDashboardScreenshots(t *testing.T) {
	dir := os.Getenv("CHATBATCH_SCREENSHOTS")
	if dir == "" {
		t.Skip("set CHATBATCH_SCREENSHOTS to a directory to capture the dashboard's screenshots")
	}
	ctx := browser(t, 120*time.Second, 1360, 860)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:",
		"-concurrency", "1", "-task-check-interval", "20ms")
	sendAndWait(t, p.url, "demo-key", seed.Broadcast)
	sendAndWait(t, p.url, "demo-key", seed.Rooms)
	at := time.Now().Add(2 * time.Hour).UnixMilli()
	_, env := call(t, http.MethodPost, p.url+"/messages/batch", "demo-key", fmt.Sprintf(`{"messageType":"text","message":"later","sendAt":%d,"paras":[{"room":"room-003"}]}`, at))
	var sched struct{ BatchID string }
	must(t, json.Unmarshal(env.Result, &sched))
	call(t, http.MethodDelete, p.url+"/messages/batch/"+sched.BatchID, "demo-key", "")
	call(t, http.MethodPost, p.url+"/messages/batch", "demo-key", fmt.Sprintf(`{"messageType":"text","message":"see you","sendAt":%d,"paras":[{"room":"room-001"}]}`, at))
	openDashboard(t, ctx, p)
	must(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#live-user`), "user-a"),
		chromedp.Click(chromedp.CSS(`#live-watch`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-status[data-state="connected"]`)),
	))
	sendAndWait(t, p.url, "demo-key", seed.Template)
	body := strings.Replace(bigBatch(5000), `{"messageType"`, `{"ratePerMinute":12000,"messageType"`, 1)
	body = strings.Replace(body, "secret body #$n$", "Flash sale ends tonight: coupon SALE-$n$", 1)
	_, env = call(t, http.MethodPost, p.url+"/messages/batch", "demo-key", body)
	var big struct{ BatchID string }
	must(t, json.Unmarshal(env.Result, &big))
	shot := func(name, scroll string, w, h int64) {
		t.Helper()
		must(t, chromedp.Do(ctx, chromedp.EmulateViewport(w, h), chromedp.Sleep(300*time.Millisecond)))
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](scroll))
		must(t, err)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
		t.Logf("%s: %d bytes", name, len(png))
	}
	must(t, chromedp.Do(ctx,
		chromedp.WaitVisible(`//ul[@id="rooms"]/li[text()="system ↔ user-a"]`),
		chromedp.Click(chromedp.CSS(`#dry-run`)),
		chromedp.WaitVisible(chromedp.CSS(`#preview`)),
		chromedp.Sleep(4500*time.Millisecond), // the paced batch is under way
	))
	shot("dashboard.png", `window.scrollTo(0, 0)`, 1360, 1000)
	must(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-batch="%s"] button`, big.BatchID))),
		chromedp.WaitVisible(chromedp.CSS(`#recipients tbody tr`)),
		chromedp.Sleep(1500*time.Millisecond),
		chromedp.SetValue(chromedp.CSS(`#body`), `{"messageType":"text","message":"hi","paras":[{"receiver":"ghost"},{"receiver":"user-a"}]}`),
		chromedp.Click(chromedp.CSS(`#send`)),
		chromedp.WaitVisible(chromedp.CSS(`#compose-error`)),
	))
	shot("batch-detail.png", `window.scrollTo(0, document.getElementById("detail").offsetTop - 16)`, 1200, 660)
}

// TestDashboardRoomNames: a batch to a room made with a name (POST
// /rooms/) shows that name, as text, in the detail's recipients table,
// with the room's ID in the cell's title; a room without a name shows by
// its ID. GET /room-names answers 401 without a key.
func TestDashboardRoomNames(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 90*time.Second, 1280, 900)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	const room = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	status, env := call(t, http.MethodPost, p.url+"/rooms/", "demo-key",
		`{"_id":"`+room+`","name":"Support <b>team</b>","roomType":"group","members":["user-a","user-b"]}`)
	if status != 200 || env.RC != 0 {
		t.Fatalf("POST /rooms/ = %d %+v", status, env)
	}
	if status, env = call(t, http.MethodGet, p.url+"/room-names?id="+room, "", ""); status != 401 {
		t.Errorf("GET /room-names without a key = %d %+v", status, env)
	}
	id := sendAndWait(t, p.url, "demo-key", `{"messageType":"text","message":"hello","paras":[{"room":"`+room+`"},{"room":"room-003"}]}`)
	openDashboard(t, ctx, p)
	label := "Support <b>team</b> (0f1e2d3c…)"
	err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-batch="%s"] button`, id))),
		chromedp.WaitVisible(fmt.Sprintf(`//table[@id="recipients"]//tr/td[3][text()=%q and @title=%q]`, label, room)),
		chromedp.WaitVisible(`//table[@id="recipients"]//tr/td[3][text()="room-003"]`),
	)
	if err != nil {
		t.Fatalf("waiting for the room's name in the recipients table: %v\nserver log:\n%s", err, p.stderr)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#recipients b").length`)); err != nil || n != 0 {
		t.Errorf("the recipients table holds %d b elements (err %v); want none", n, err)
	}
}
