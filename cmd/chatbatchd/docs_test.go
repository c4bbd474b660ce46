package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/adapters/bunstore/bunmysql"
	"github.com/chatbatch/chatbatch/internal/doccheck"
	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// The documentation's commands, run and checked against the real
// chatbatchd (see the root TestDocs for the rule they follow):
//
//   - TestDocsFlags parses every "chatbatchd …" and "go run
//     ./cmd/chatbatchd …" line of README.md and docs/*.md with
//     chatbatchd's own flag parsing (and its -redis and -db forms).
//   - TestDocsCurl starts chatbatchd as the README starts it (-demo, on
//     the embedded defaults: SQLite and an in-process Redis) and runs every
//     curl command of the documentation for real, in order, with bash and
//     the curl binary, the documented 127.0.0.1:8080 replaced by the test
//     server's address; each must answer the documented success (RC 0) or
//     the status its comment states ("# → 409 BATCH_FINISHED").
//   - TestDocsProduction runs the production line of docs/chatbatchd.md
//     and the curls of its section (users, the first batch without sender,
//     which the start's default sender makes work, the sender's profile)
//     on a fresh database: PostgreSQL and Redis when
//     CHATBATCH_TEST_POSTGRES and CHATBATCH_TEST_REDIS are set (a database
//     and a Redis database of its own), else SQLite and the in-process
//     Redis.

// repoRoot is the repository, from this package's directory.
const repoRoot = "../.."

// documentedAddr is the address the documentation's curls use.
const documentedAddr = "127.0.0.1:8080"

// productionFile and productionSection hold the production line and the
// calls that run against it.
const (
	productionFile    = "docs/chatbatchd.md"
	productionSection = "Production"
)

// docCommands returns the commands of every block of the documentation
// that is not an excerpt, in file order (README.md first).
func docCommands(t *testing.T) []doccheck.Command {
	t.Helper()
	cmds, err := doccheck.ShellCommands(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

func inProduction(c doccheck.Command) bool {
	return c.Block.File == productionFile && c.Block.Section == productionSection
}

// isSplit reports whether chatbatchd args run only the API or only the worker.
func isSplit(args []string) bool {
	return slices.Contains(args, "-api=false") || slices.Contains(args, "-worker=false")
}

func TestDocsFlags(t *testing.T) {
	t.Parallel()
	fixtures := t.TempDir()
	files := map[string]string{ // stand-ins for files the lines name
		"-fcm-credentials": writeServiceAccount(t, fixtures, "https://oauth2.googleapis.com/token", nil),
		"-fcm-tokens":      filepath.Join(fixtures, "tokens.json"),
	}
	must(t, os.WriteFile(files["-fcm-tokens"], []byte(`{"my-app":{"user001":["token-1"]}}`), 0o600))

	n := 0
	vars := map[string]string{} // what the file's assignments set so far
	file := ""
	for _, c := range docCommands(t) {
		if c.Block.File != file {
			file, vars = c.Block.File, map[string]string{}
		}
		switch c.Class {
		case doccheck.Assign:
			for _, e := range c.Env {
				name, value, _ := strings.Cut(e, "=")
				vars[name] = value
			}
		case doccheck.Chatbatchd:
			n++
			env := map[string]string{}
			for k, v := range vars {
				env[k] = v
			}
			for _, e := range c.Env {
				name, value, _ := strings.Cut(e, "=")
				env[name] = value
			}
			args := c.Program()
			for i := 0; i+1 < len(args); i++ {
				if f, ok := files[args[i]]; ok {
					if _, err := os.Stat(args[i+1]); err != nil {
						args = slices.Clone(args)
						args[i+1] = f
					}
				}
			}
			if err := checkFlags(args, env); err != nil {
				t.Errorf("%s: %s: %v", c.Pos(), strings.Join(c.Args, " "), err)
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d chatbatchd lines in the documentation", n)
	}
	// The check catches what chatbatchd refuses.
	for _, bad := range [][]string{{"-demo", "-adr", ":8080"}, {"-db", "postgres://x/y"}, {"-demo", "-redis", "redis-cluster://a:1"}, {"-demo", "-db", "oracle://x"}} {
		if checkFlags(bad, map[string]string{}) == nil {
			t.Errorf("checkFlags(%q) accepted it", bad)
		}
	}
}

// checkFlags checks a chatbatchd command line as chatbatchd would read it
// at start, without starting anything.
func checkFlags(args []string, env map[string]string) error {
	if target, ok := healthcheckArgs(args); ok {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-healthcheck %q is not an http(s) URL", target)
		}
		return nil
	}
	o, err := parseFlags(args, func(k string) string { return env[k] }, io.Discard)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.redis != "" {
		if _, err := parseRedis(o.redis); err != nil {
			return fmt.Errorf("-redis: %v", err)
		}
	}
	return checkDSN(o.db)
}

// checkDSN checks that dsn is one of the forms bunopen.Open takes.
func checkDSN(dsn string) error {
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"), strings.HasPrefix(lower, "mysql://"):
		if _, err := url.Parse(dsn); err != nil {
			return fmt.Errorf("-db: %v", err)
		}
		return nil
	case strings.HasPrefix(lower, "sqlite:"), bunmysql.IsNativeDSN(dsn):
		return nil
	}
	return fmt.Errorf("-db %q is none of the forms chatbatchd opens", dsn)
}

// docRunner runs documented commands with bash, as a reader would paste
// them, against one chatbatchd.
type docRunner struct {
	t         *testing.T
	addr      string            // the server's host:port, for 127.0.0.1:8080
	vars      map[string]string // the shell variables the commands set so far
	lastBatch string            // the batchID of the latest batch a POST created
	lastToken string            // the token of the latest answer that issued one
	home      string            // HOME and CURL_HOME: a .curlrc that writes out the status
	ran       []curlRun
}

type curlRun struct {
	cmd    doccheck.Command
	status int    // HTTP status (0 when the output is piped)
	rc     int    // the envelope's RC (-1 when the answer is not one)
	body   string // the answer's body
}

func newDocRunner(t *testing.T) *docRunner {
	r := &docRunner{t: t, vars: map[string]string{}, home: t.TempDir()}
	// curl reads $CURL_HOME/.curlrc: every answer ends in its status.
	must(t, os.WriteFile(filepath.Join(r.home, ".curlrc"), []byte("write-out = \"\\n@@status=%{http_code}\\n\"\n"), 0o600))
	return r
}

// reset forgets the variables: each file's commands stand on their own.
func (r *docRunner) reset() {
	r.vars, r.lastBatch, r.lastToken = map[string]string{}, "", ""
}

func (r *docRunner) bash(c doccheck.Command, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-u", "-o", "pipefail", "-c", script)
	cmd.Dir = repoRoot
	var env []string
	for _, e := range os.Environ() {
		name, _, _ := strings.Cut(e, "=")
		if strings.HasSuffix(strings.ToLower(name), "_proxy") || name == "HOME" || name == "CURL_HOME" {
			continue
		}
		env = append(env, e)
	}
	env = append(env, "HOME="+r.home, "CURL_HOME="+r.home, "NO_PROXY=*", "no_proxy=*")
	for k, v := range r.vars {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%v; stderr: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

var (
	batchIDForm = regexp.MustCompile(`^batch-\d{8}-[a-z0-9]+$`)
	tokenForm   = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`) // a client token chatbatchd issues
)

// assign runs an assignment: NAME=batch-… takes the batch ID the latest
// POST created (the documentation says "the batchID of your answer"), and
// NAME=<an issued token's form> the token the latest answer issued;
// anything else is evaluated by bash.
func (r *docRunner) assign(c doccheck.Command) {
	r.t.Helper()
	for _, e := range c.Env {
		name, value, _ := strings.Cut(e, "=")
		if batchIDForm.MatchString(value) {
			if r.lastBatch == "" {
				r.t.Errorf("%s: %s is set from a batch ID, but no POST before it created a batch", c.Pos(), name)
			}
			r.vars[name] = r.lastBatch
			continue
		}
		if tokenForm.MatchString(value) {
			if r.lastToken == "" {
				r.t.Errorf("%s: %s is set from a token, but no answer before it issued one", c.Pos(), name)
			}
			r.vars[name] = r.lastToken
			continue
		}
		out, err := r.bash(c, c.Text+"\nprintf %s \"$"+name+"\"")
		if err != nil || out == "" {
			r.t.Errorf("%s: %s: %q, %v", c.Pos(), c.Text, out, err)
		}
		r.vars[name] = out
	}
}

var statusLine = regexp.MustCompile(`\n?@@status=(\d{3})\n?$`)

// curl runs a curl command and checks its answer against what the
// documentation says: RC 0 (HTTP 200), or the status its comment states.
func (r *docRunner) curl(c doccheck.Command) {
	r.t.Helper()
	if !strings.Contains(c.Text, "http://"+documentedAddr+"/") {
		r.t.Errorf("%s: the curl does not go to http://%s/", c.Pos(), documentedAddr)
		return
	}
	script := strings.ReplaceAll(c.Text, documentedAddr, r.addr)
	out, err := r.bash(c, script)
	wantStatus, wantCode := c.Expect()
	run := curlRun{cmd: c, rc: -1}
	if err != nil {
		r.t.Errorf("%s: %s\n%v\n%s", c.Pos(), c.Text, err, out)
		return
	}
	if m := statusLine.FindStringSubmatch(out); m != nil {
		fmt.Sscan(m[1], &run.status)
		out = out[:len(out)-len(m[0])]
	} else if len(c.Stages()) == 1 {
		r.t.Errorf("%s: no status in curl's output: %q", c.Pos(), out)
	}
	if strings.HasPrefix(out, "HTTP/") { // curl -i: headers first
		if _, body, ok := strings.Cut(out, "\r\n\r\n"); ok {
			out = body
		}
	}
	run.body = out
	if run.status != 0 && run.status != wantStatus {
		r.t.Errorf("%s: %s\nanswered %d, the documentation says %d:\n%s", c.Pos(), c.Text, run.status, wantStatus, out)
	}
	if trimmed := strings.TrimSpace(out); strings.HasPrefix(trimmed, "{") && len(c.Stages()) == 1 {
		var env struct {
			RC     *int            `json:"RC"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(trimmed), &env); err != nil || env.RC == nil {
			r.t.Errorf("%s: the answer is not the envelope: %v\n%s", c.Pos(), err, out)
		} else {
			run.rc = *env.RC
			want := 0
			if wantStatus != 200 {
				want = wantStatus
			}
			if run.rc != want {
				r.t.Errorf("%s: %s\nRC %d, the documentation says %d:\n%s", c.Pos(), c.Text, run.rc, want, out)
			}
			if wantCode != "" && (env.Error == nil || env.Error.Code != wantCode) {
				r.t.Errorf("%s: the answer's code is not %s:\n%s", c.Pos(), wantCode, out)
			}
			var res struct {
				BatchID string
				Status  *string
				DryRun  bool
				Token   string
			}
			if json.Unmarshal(env.Result, &res) == nil && res.BatchID != "" && res.Status == nil && !res.DryRun {
				r.lastBatch = res.BatchID // a POST that created a batch
			}
			if res.Token != "" {
				r.lastToken = res.Token // POST /admin/clients with issueAccessToken
			}
		}
	}
	r.ran = append(r.ran, run)
}

// healthcheck runs a documented "chatbatchd -healthcheck URL" with the
// built binary against the server.
func (r *docRunner) healthcheck(c doccheck.Command) {
	r.t.Helper()
	args := slices.Clone(c.Program())
	for i := range args {
		args[i] = strings.ReplaceAll(args[i], documentedAddr, r.addr)
	}
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		r.t.Errorf("%s: chatbatchd %s: %v\n%s", c.Pos(), strings.Join(args, " "), err, out)
	}
}

// readmeStart returns the arguments the README starts chatbatchd with.
func readmeStart(t *testing.T, cmds []doccheck.Command) []string {
	t.Helper()
	for _, c := range cmds {
		if c.Block.File == "README.md" && c.Class == doccheck.Chatbatchd {
			return c.Program()
		}
	}
	t.Fatal("README.md starts no chatbatchd")
	return nil
}

// withFlag sets flag to value in args (nil value: removes the flag and
// its value), adding it when it is missing.
func withFlag(args []string, name string, value *string) []string {
	var out []string
	found := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == name && i+1 < len(args):
			i++
		case strings.HasPrefix(a, name+"="):
		default:
			out = append(out, a)
			continue
		}
		found = true
		if value != nil {
			out = append(out, name, *value)
		}
	}
	if !found && value != nil {
		out = append(out, name, *value)
	}
	return out
}

func ptr(s string) *string { return &s }

func TestDocsCurl(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.Skip(t, "curl is not installed")
	}
	cmds := docCommands(t)
	args := withFlag(readmeStart(t, cmds), "-addr", ptr("127.0.0.1:0"))
	if !slices.Contains(args, "-demo") {
		t.Fatalf("the README starts chatbatchd with %q, without -demo", args)
	}
	// As a newcomer runs it: IM_API_KEY unset, in a directory of its own.
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, args...)
	r := newDocRunner(t)
	r.addr = strings.TrimPrefix(p.url, "http://")
	file := ""
	health := 0
	for _, c := range cmds {
		if inProduction(c) {
			continue // TestDocsProduction's
		}
		if c.Block.File != file {
			file = c.Block.File
			r.reset()
		}
		switch c.Class {
		case doccheck.Assign:
			r.assign(c)
		case doccheck.Curl:
			r.curl(c)
		case doccheck.Chatbatchd:
			if _, ok := healthcheckArgs(c.Program()); ok {
				r.healthcheck(c)
				health++
			}
		}
	}
	byFile := map[string]int{}
	for _, run := range r.ran {
		byFile[run.cmd.Block.File]++
	}
	t.Logf("curls run: %v, health checks: %d", byFile, health)
	for _, f := range []string{"README.md", "docs/api.md", "docs/chatbatchd.md", "docs/imkit.md"} {
		if byFile[f] == 0 {
			t.Errorf("no curl of %s ran", f)
		}
	}
}

func TestDocsProduction(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.Skip(t, "curl is not installed")
	}
	var section []doccheck.Command
	for _, c := range docCommands(t) {
		if inProduction(c) {
			section = append(section, c)
		}
	}
	line := slices.IndexFunc(section, func(c doccheck.Command) bool {
		return c.Class == doccheck.Chatbatchd && !isSplit(c.Program()) && !slices.Contains(c.Program(), "-demo")
	})
	if line < 0 {
		t.Fatalf("%s, section %q, has no production line", productionFile, productionSection)
	}
	prod := section[line]
	for _, want := range []string{"-addr", "-app", "-db", "-redis"} {
		if !slices.ContainsFunc(prod.Program(), func(a string) bool { return a == want || strings.HasPrefix(a, want+"=") }) {
			t.Errorf("%s: the production line lacks %s", prod.Pos(), want)
		}
	}

	r := newDocRunner(t)
	for _, c := range section[:line] {
		if c.Class == doccheck.Assign {
			r.assign(c)
		}
	}
	key := r.vars["IM_API_KEY"]
	for _, e := range prod.Env {
		if v, ok := strings.CutPrefix(e, "IM_API_KEY="); ok {
			key = v
		}
	}
	if key == "" {
		t.Fatalf("%s: no IM_API_KEY is set for the production line", prod.Pos())
	}

	// The documented line, on a database (and Redis database) of its own.
	args := withFlag(prod.Program(), "-addr", ptr("127.0.0.1:0"))
	if os.Getenv("CHATBATCH_TEST_POSTGRES") != "" && os.Getenv("CHATBATCH_TEST_REDIS") != "" {
		db, rd := externalServices(t)
		u, err := url.Parse(rd)
		must(t, err)
		u.Path = fmt.Sprintf("/%d", 1+rand.IntN(15))
		args = withFlag(withFlag(args, "-db", &db), "-redis", ptr(u.String()))
		t.Logf("PostgreSQL and Redis (database %s)", u.Path)
	} else {
		args = withFlag(withFlag(args, "-db", ptr("sqlite:"+filepath.Join(t.TempDir(), "production.db"))), "-redis", nil)
		t.Log("SQLite and the in-process Redis (set CHATBATCH_TEST_POSTGRES and CHATBATCH_TEST_REDIS for the real services)")
	}
	p := startProc(t, t.TempDir(), append(slices.Clone(prod.Env), "IM_API_KEY="+key), args...)
	r.addr = strings.TrimPrefix(p.url, "http://")
	for _, c := range section[line+1:] {
		switch c.Class {
		case doccheck.Assign:
			r.assign(c)
		case doccheck.Curl:
			r.curl(c)
		}
	}

	// On the fresh database the first batch without sender is accepted:
	// no documented call created the default sender before it (the start
	// did); the call that names it afterwards sets its profile.
	first := slices.IndexFunc(r.ran, func(run curlRun) bool {
		return strings.Contains(run.cmd.Text, "/messages/batch ") && !strings.Contains(run.cmd.Text, `"sender"`)
	})
	if first < 0 {
		t.Fatalf("no documented batch without sender")
	}
	if run := r.ran[first]; run.status != 200 || run.rc != 0 {
		t.Errorf("%s: the first batch without sender, on a fresh database = %d (RC %d):\n%s", run.cmd.Pos(), run.status, run.rc, run.body)
	}
	if slices.ContainsFunc(r.ran[:first], func(run curlRun) bool { return strings.Contains(run.cmd.Text, `"_id":"system"`) }) {
		t.Errorf("a documented call creates the default sender before the first batch: the test would not show that the start created it")
	}
	if !strings.Contains(p.stderr.String(), "created the default sender") {
		t.Errorf("the start did not log that it created the default sender")
	}
}

// TestDefaultSender: the start creates -default-sender when it is missing
// (once: a second start finds it), and a batch without sender is sent as
// it; a bad name is a usage error.
func TestDefaultSender(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "fresh.db")
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", db, "-default-sender", "noreply")
	aok(t, http.MethodPost, p.url+"/admin/clients", "k", `{"_id":"u1"}`, nil)
	sendAndWait(t, p.url, "k", `{"messageType":"text","message":"hi","paras":[{"receiver":"u1"}]}`)
	if msgs := roomMessages(t, p.url, "k", store.DirectRoomID("noreply", "u1")); len(msgs) != 1 || msgs[0].Sender != "noreply" {
		t.Errorf("the batch without sender: %+v", msgs)
	}
	if !strings.Contains(p.stderr.String(), "created the default sender") {
		t.Errorf("no log line for the default sender's creation")
	}
	p.stop(t)
	q := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-addr", "127.0.0.1:0", "-db", db, "-default-sender", "noreply")
	if strings.Contains(q.stderr.String(), "created the default sender") {
		t.Errorf("the default sender was created again on the second start")
	}
	out, err := exec.Command(binary, "-demo", "-default-sender", " padded ").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "-default-sender") {
		t.Errorf("-default-sender ' padded ': %v %s", err, out)
	}
}
