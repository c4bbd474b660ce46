package doccheck

import (
	"reflect"
	"strings"
	"testing"
)

const sample = "# Title\n" +
	"\n" +
	"## Try it\n" +
	"\n" +
	"```sh\n" +
	"go run ./cmd/chatbatchd -demo\n" +
	"```\n" +
	"\n" +
	"<!-- excerpt -->\n" +
	"\n" +
	"```go\n" +
	"svc, err := batch.New(cfg)\n" +
	"```\n" +
	"\n" +
	"### Sub\n" +
	"\n" +
	"~~~~\n" +
	"```sh\n" +
	"not a fence inside\n" +
	"~~~~\n" +
	"```text\n" +
	"```\n"

func TestParse(t *testing.T) {
	blocks, err := Parse("README.md", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Block{
		{File: "README.md", Line: 5, Lang: "sh", Text: "go run ./cmd/chatbatchd -demo\n", Section: "Try it"},
		{File: "README.md", Line: 11, Lang: "go", Text: "svc, err := batch.New(cfg)\n", Excerpt: true, Section: "Try it"},
		{File: "README.md", Line: 17, Lang: "", Text: "```sh\nnot a fence inside\n", Section: "Try it", Subsection: "Sub"},
		{File: "README.md", Line: 21, Lang: "text", Text: "", Section: "Try it", Subsection: "Sub"},
	}
	if !reflect.DeepEqual(blocks, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", blocks, want)
	}
	if _, err := Parse("x.md", []byte("```sh\ncurl x\n")); err == nil || !strings.Contains(err.Error(), "x.md:1") {
		t.Errorf("an unclosed fence: %v", err)
	}
}

func TestCommands(t *testing.T) {
	text := `# a comment line

curl -sS http://127.0.0.1:8080/messages/batch \
  -H 'IM-API-KEY: demo-key' \
  -d '{
    "message": "Hi #1 $name$"
  }'   # → 409 BATCH_FINISHED
BATCH_ID=batch-20261125-k3m7q2x7ab   # the batchID of the answer above
in_one_hour=$(( ($(date +%s) + 3600) * 1000 ))
export IM_API_KEY=$(openssl rand -hex 24)
IM_API_KEY=… chatbatchd -db 'postgres://chat@db/chat' -worker=false
go run ./cmd/chatbatch-bench -quick -redis "$CHATBATCH_TEST_REDIS"
curl -sS http://127.0.0.1:8080/metrics | grep -E '^chatbatch_'
CHATBATCH_TEST_REDIS=127.0.0.1:6379 \
go test -race -count=1 ./...
docker compose up --build
`
	cmds, err := Commands(Block{File: "d.md", Line: 10, Lang: "sh", Text: text})
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Line    int
		Class   Class
		Env     []string
		Args    []string
		Comment string
	}
	var g []got
	for _, c := range cmds {
		g = append(g, got{c.Line, c.Class, c.Env, c.Args, c.Comment})
	}
	want := []got{
		{13, Curl, nil, []string{"curl", "-sS", "http://127.0.0.1:8080/messages/batch", "-H", "IM-API-KEY: demo-key", "-d", "{\n    \"message\": \"Hi #1 $name$\"\n  }"}, "→ 409 BATCH_FINISHED"},
		{18, Assign, []string{"BATCH_ID=batch-20261125-k3m7q2x7ab"}, []string{}, "the batchID of the answer above"},
		{19, Assign, []string{"in_one_hour=$(( ($(date +%s) + 3600) * 1000 ))"}, []string{}, ""},
		{20, Assign, []string{"IM_API_KEY=$(openssl rand -hex 24)"}, []string{}, ""},
		{21, Chatbatchd, []string{"IM_API_KEY=…"}, []string{"chatbatchd", "-db", "postgres://chat@db/chat", "-worker=false"}, ""},
		{22, Bench, nil, []string{"go", "run", "./cmd/chatbatch-bench", "-quick", "-redis", "$CHATBATCH_TEST_REDIS"}, ""},
		{23, Curl, nil, []string{"curl", "-sS", "http://127.0.0.1:8080/metrics", "|", "grep", "-E", "^chatbatch_"}, ""},
		{24, GoTest, []string{"CHATBATCH_TEST_REDIS=127.0.0.1:6379"}, []string{"go", "test", "-race", "-count=1", "./..."}, ""},
		{26, Unknown, nil, []string{"docker", "compose", "up", "--build"}, ""},
	}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("Commands =\n%+v\nwant\n%+v", g, want)
	}
	if st, code := cmds[0].Expect(); st != 409 || code != "BATCH_FINISHED" {
		t.Errorf("Expect = %d %q", st, code)
	}
	if st, code := cmds[6].Expect(); st != 200 || code != "" {
		t.Errorf("Expect without a comment = %d %q", st, code)
	}
	if p := cmds[4].Program(); !reflect.DeepEqual(p, []string{"-db", "postgres://chat@db/chat", "-worker=false"}) {
		t.Errorf("Program = %q", p)
	}
	if p := cmds[5].Program(); !reflect.DeepEqual(p, []string{"-quick", "-redis", "$CHATBATCH_TEST_REDIS"}) {
		t.Errorf("Program = %q", p)
	}
	if st := cmds[6].Stages(); len(st) != 2 || st[1][0] != "grep" {
		t.Errorf("Stages = %q", st)
	}
	if !strings.Contains(cmds[0].Text, "\"message\": \"Hi #1 $name$\"") || strings.Contains(cmds[0].Text, "→") {
		t.Errorf("Text = %q", cmds[0].Text)
	}
	if _, err := Commands(Block{File: "d.md", Line: 3, Lang: "sh", Text: "echo 'open\n"}); err == nil || !strings.Contains(err.Error(), "d.md:") {
		t.Errorf("an unclosed quote: %v", err)
	}
}

func TestConsoleCommands(t *testing.T) {
	cmds, err := Commands(Block{File: "d.md", Line: 1, Lang: "console", Text: "$ go test ./...\nok  github.com/x 0.1s\n$ curl -sS \\\n  http://127.0.0.1:8080/healthz\n"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 2 || cmds[0].Class != GoTest || cmds[1].Class != Curl || cmds[1].Line != 4 {
		t.Errorf("console commands: %+v", cmds)
	}
}

func TestLinks(t *testing.T) {
	src := "See [the API](docs/api.md#errors), ![shot](docs/screenshots/a.png \"title\") and [site](https://example.com).\n" +
		"`[not](a-link.md)`\n```sh\n[no](x.md)\n```\n[anchor](#try-it) [mail](mailto:a@b.c)\n"
	var got []string
	for _, l := range Links("README.md", []byte(src)) {
		got = append(got, l.Target)
		if l.Target == "docs/api.md#errors" {
			if p, a := l.PathAndAnchor(); p != "docs/api.md" || a != "errors" || !l.Relative() {
				t.Errorf("%s: %q %q %v", l.Target, p, a, l.Relative())
			}
		}
		if (l.Target == "https://example.com" || l.Target == "#try-it" || l.Target == "mailto:a@b.c") && l.Relative() {
			t.Errorf("%s is not relative", l.Target)
		}
	}
	want := []string{"docs/api.md#errors", "docs/screenshots/a.png", "https://example.com", "#try-it", "mailto:a@b.c"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Links = %q, want %q", got, want)
	}
}

func TestAnchors(t *testing.T) {
	a := Anchors([]byte("# chatbatch\n## Try it: the reference server\n## `POST /messages/batch`\n## Errors\n## Errors\n```sh\n# not a heading\n```\n### Redis Sentinel & [Cluster](x.md)\n"))
	for _, want := range []string{"chatbatch", "try-it-the-reference-server", "post-messagesbatch", "errors", "errors-1", "redis-sentinel--cluster"} {
		if !a[want] {
			t.Errorf("no anchor %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Errorf("a comment in a code block made an anchor")
	}
}

func TestContains(t *testing.T) {
	hay := Lines("func f() {\n\tx := 1\n\n\ty := 2\n}\n")
	if !Contains(hay, Lines("x := 1\n    y := 2")) {
		t.Error("consecutive lines, indentation and blank lines aside, not found")
	}
	if Contains(hay, Lines("x := 1\n}")) {
		t.Error("non-consecutive lines found")
	}
}

func TestParseGoTest(t *testing.T) {
	g, err := ParseGoTest([]string{"go", "test", "-run", "^$", "-bench=Accept|Decode", "-benchmem", "-count=5", "./batch/", "./render/"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Run != "^$" || g.Bench != "Accept|Decode" || !reflect.DeepEqual(g.Packages, []string{"./batch/", "./render/"}) {
		t.Errorf("ParseGoTest = %+v", g)
	}
	if _, err := ParseGoTest([]string{"go", "test", "-run", "X"}); err == nil {
		t.Error("no package: no error")
	}
}
