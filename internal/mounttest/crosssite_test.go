package mounttest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/dashboard"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// statusLog records the status of every request a server answered.
type statusLog struct {
	mu   sync.Mutex
	seen []string // "METHOD PATH STATUS"
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(s int) { w.status = s; w.ResponseWriter.WriteHeader(s) }
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (l *statusLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		l.seen = append(l.seen, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, sw.status))
		l.mu.Unlock()
	})
}

func (l *statusLog) countPrefix(p string) int { return len(l.matching(p)) }

func (l *statusLog) matching(p string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, x := range l.seen {
		if strings.HasPrefix(x, p) {
			out = append(out, x)
		}
	}
	return out
}

func (l *statusLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.seen {
		if x == s {
			n++
		}
	}
	return n
}

// TestCrossSiteRefusedInBrowser: a host whose users are signed in by a
// session cookie (Config.AuthenticateRequest reads it; the dashboard in
// SessionAuth mode), and a page on another origin of the same site —
// http://127.0.0.1 on another port, so the browser sends the Lax session
// cookie with its requests — that tries what any page can do without a
// preflight: a text/plain fetch and a form POST to the signed-in user's
// batch's recall. Both reach the API and are refused with 403; the batch
// is untouched. The same recall from the host's own page succeeds, so the
// cookie did authenticate and the refusal is the cross-origin check's.
func TestCrossSiteRefusedInBrowser(t *testing.T) {
	t.Parallel()
	env := bt.NewEnv(t, func(c *batch.Config) {
		c.AuthenticateRequest = func(r *http.Request) (batch.Principal, error) {
			ck, err := r.Cookie("session")
			if err != nil {
				return batch.Principal{}, batch.ErrNoCredentials
			}
			if ck.Value != "user-a-session" {
				return batch.Principal{}, batch.ErrUnauthenticated
			}
			return batch.Principal{AppID: bt.TestApp, UserID: "user-a"}, nil
		}
	})
	mux := http.NewServeMux()
	env.Svc.Mount(mux)
	dash, err := dashboard.New(dashboard.Options{API: mux, SessionAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/admin/batches/", http.StripPrefix("/admin/batches", dash))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "user-a-session", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		fmt.Fprint(w, "<!doctype html><title>signed in</title><p id=ok>signed in</p>")
	})
	mux.HandleFunc("GET /own", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("batch")
		fmt.Fprintf(w, `<!doctype html><title>own</title><script>
fetch("/messages/batch/%s/recall", {method: "POST", credentials: "include"})
  .then(r => { document.title = "own:" + r.status })</script>`, id)
	})
	var log statusLog
	host := httptest.NewServer(log.wrap(mux))
	t.Cleanup(host.Close)

	// The other origin: 127.0.0.1 as well (the same site), another port.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("batch")
		target := host.URL + "/messages/batch/" + id + "/recall"
		if r.URL.Path == "/form" {
			fmt.Fprintf(w, `<!doctype html><title>form</title>
<form id=f method=POST action="%s" enctype="text/plain"><input name=a value=b></form>
<script>document.getElementById("f").submit()</script>`, target)
			return
		}
		fmt.Fprintf(w, `<!doctype html><title>evil</title><script>
fetch(%q, {method: "POST", mode: "no-cors", credentials: "include", headers: {"Content-Type": "text/plain"}, body: ""})
  .then(() => { document.title = "sent" }, e => { document.title = "error " + e })</script>`, target)
	}))
	t.Cleanup(other.Close)

	ctx := browser(t, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate(host.URL+"/login"), chromedp.WaitVisible(chromedp.CSS(`#ok`))); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	// The signed-in user's batch, sent from the host's own origin.
	script := `fetch("/messages/batch", {method: "POST", credentials: "include", headers: {"Content-Type": "application/json"},
  body: JSON.stringify({messageType: "text", message: "hi", paras: [{receiver: "user-b"}]})}).then(r => r.json()).then(j => j.result.batchID)`
	sent, err := chromedp.Run(ctx, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(sent, "batch-") {
		t.Fatalf("sending as the signed-in user: %q %v", sent, err)
	}
	recall := "POST /messages/batch/" + sent + "/recall"

	if err := chromedp.Do(ctx, chromedp.Navigate(other.URL+"/?batch="+sent), chromedp.Poll[chromedp.Void](`document.title === "sent"`)); err != nil {
		title, _ := chromedp.Run(ctx, chromedp.Title())
		t.Fatalf("the other origin's fetch: %v (title %q)", err, title)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(other.URL+"/form?batch="+sent), chromedp.Poll[chromedp.Void](`location.origin === `+fmt.Sprintf("%q", host.URL))); err != nil {
		t.Fatalf("the other origin's form: %v", err)
	}
	// Both requests reached the API (a browser does not hold them back)
	// and both were refused.
	bt.WaitUntil(t, func() bool { return log.countPrefix(recall+" ") == 2 })
	if n := log.count(recall + " 403"); n != 2 {
		t.Fatalf("the other origin's two recalls were answered %v, want 403 both", log.matching(recall+" "))
	}
	if _, st := env.Status(t, bt.AdminKey, sent); st.Status != "queued" || st.Canceled != 0 {
		t.Fatalf("after the other origin's requests the batch is %+v, want queued and untouched", st)
	}

	// The host's own page recalls it with the same cookie.
	if err := chromedp.Do(ctx, chromedp.Navigate(host.URL+"/own?batch="+sent), chromedp.Poll[chromedp.Void](`document.title.startsWith("own:")`)); err != nil {
		t.Fatalf("the host's own recall: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	bt.Must(t, err)
	if title != "own:200" {
		t.Errorf("the host's own page recalling: %s, want own:200", title)
	}
	if _, st := env.Status(t, bt.AdminKey, sent); st.Status != "recalled" {
		t.Errorf("after the host's own recall the batch is %+v, want recalled", st)
	}
}
