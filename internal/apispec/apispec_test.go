package apispec_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/chatbatch/chatbatch"
	"github.com/chatbatch/chatbatch/internal/apispec"
	"github.com/chatbatch/chatbatch/internal/seed"
)

func doc(t *testing.T) *openapi3.T {
	t.Helper()
	d, err := apispec.Doc()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDescriptionIsValid: openapi.yaml is valid OpenAPI 3.1 (its schemas
// JSON Schema 2020-12, its examples valid), and Load refuses what is not.
func TestDescriptionIsValid(t *testing.T) {
	d := doc(t)
	if !strings.HasPrefix(d.OpenAPI, "3.1.") {
		t.Errorf("openapi: %q, want 3.1.x", d.OpenAPI)
	}
	for _, bad := range []string{
		`openapi: 3.0.3
info: {title: t, version: "1"}
paths: {}`,
		`openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /x:
    get:
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {type: object, properties: {a: {$ref: '#/components/schemas/Missing'}}}`,
		`openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /x:
    get:
      responses:
        '200': {description: ok, content: {application/json: {schema: {type: integer}, example: "a string"}}}`,
	} {
		if _, err := apispec.Load([]byte(bad)); err == nil {
			t.Errorf("Load accepted an invalid description:\n%s", bad)
		}
	}
	if _, err := apispec.Load(chatbatch.OpenAPI); err != nil {
		t.Error(err)
	}
}

// errorCodes parses batch/errors.go: every Code… constant, its value and
// the HTTP status its comment gives.
func errorCodes(t *testing.T) map[string]int {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../../batch/errors.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s is not a string literal", name.Name)
					continue
				}
				code, _ := strconv.Unquote(lit.Value)
				status := 0
				if vs.Comment != nil {
					// "// 401" or "// 401: why".
					text := strings.TrimSpace(vs.Comment.Text())
					status, _ = strconv.Atoi(text[:strings.IndexFunc(text+" ", func(r rune) bool { return r < '0' || r > '9' })])
				}
				if status < 400 || status > 599 {
					t.Errorf("%s: its comment %q gives no HTTP status", name.Name, vs.Comment.Text())
				}
				codes[code] = status
			}
		}
	}
	if len(codes) < 15 {
		t.Fatalf("found only %d Code constants in batch/errors.go", len(codes))
	}
	return codes
}

// errorResponse returns the RC and the codes an error response of the
// description pins (allOf: ErrorEnvelope and a refinement), or ok false
// for another response.
func errorResponse(r *openapi3.Response) (rc int, codes []string, ok bool) {
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || len(mt.Schema.Value.AllOf) != 2 || !strings.HasSuffix(mt.Schema.Value.AllOf[0].Ref, "/ErrorEnvelope") {
		return 0, nil, false
	}
	refine := mt.Schema.Value.AllOf[1].Value
	if p := refine.Properties["RC"]; p != nil {
		if f, isNum := p.Value.Const.(float64); isNum {
			rc = int(f)
		}
	}
	if e := refine.Properties["error"]; e != nil {
		if c := e.Value.Properties["code"]; c != nil {
			if s, isStr := c.Value.Const.(string); isStr {
				codes = append(codes, s)
			}
			for _, v := range c.Value.Enum {
				codes = append(codes, v.(string))
			}
		}
	}
	return rc, codes, true
}

// TestErrorCodes: every error code of batch/errors.go is in the
// description's ErrorCode enum, and some error response of its HTTP status
// carries it; the enum has no other code; every error response pins an RC
// that is the status it is used for.
func TestErrorCodes(t *testing.T) {
	codes := errorCodes(t)
	d := doc(t)
	var enum []string
	for _, v := range d.Components.Schemas["ErrorCode"].Value.Enum {
		enum = append(enum, v.(string))
	}
	byStatus := map[int][]string{}
	for name, ref := range d.Components.Responses {
		rc, cs, ok := errorResponse(ref.Value)
		if !ok {
			continue
		}
		if rc == 0 || len(cs) == 0 {
			t.Errorf("error response %s pins no RC or no code", name)
		}
		byStatus[rc] = append(byStatus[rc], cs...)
	}
	for code, status := range codes {
		if !slices.Contains(enum, code) {
			t.Errorf("error code %s (batch/errors.go) is missing from the ErrorCode enum of openapi.yaml", code)
		}
		if !slices.Contains(byStatus[status], code) {
			t.Errorf("no %d response of openapi.yaml (components.responses) carries error code %s", status, code)
		}
	}
	for _, code := range enum {
		if _, ok := codes[code]; !ok {
			t.Errorf("openapi.yaml's ErrorCode enum has %s, which batch/errors.go does not define", code)
		}
	}
	for status, cs := range byStatus {
		for _, c := range cs {
			if s, ok := codes[c]; ok && s != status {
				t.Errorf("openapi.yaml has code %s in a %d response; batch/errors.go says %d", c, status, s)
			}
		}
	}
	for path, item := range d.Paths.Map() {
		for method, op := range item.Operations() {
			for key, ref := range op.Responses.Map() {
				if rc, _, ok := errorResponse(ref.Value); ok && strconv.Itoa(rc) != key {
					t.Errorf("%s %s: response %s pins RC %d", method, path, key, rc)
				}
			}
		}
	}
}

func jsonHeader(extra ...string) http.Header {
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Cache-Control": {"no-store"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return h
}

// TestCheck: answers that match pass; a wrong type, a missing or unknown
// field, a code of another status, a missing required header, an unknown
// path, method or status fail.
func TestCheck(t *testing.T) {
	const status = `{"RC":0,"RM":"OK","result":{"batchID":"batch-20261125-k3m7q2x7ab","status":"completed","count":2,"sent":2,"failed":0,"pending":0,"canceled":0,"pushFailed":0,"createdAt":"2026-11-25T18:40:00.123456Z","finishedAt":"2026-11-25T18:40:00.301234Z"}}`
	for _, c := range []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		ok                 bool
	}{
		{"send", "POST", "/messages/batch", 200, jsonHeader(), `{"RC":0,"RM":"OK","result":{"batchID":"b","count":2}}`, true},
		{"replay", "POST", "/messages/batch", 200, jsonHeader("Idempotent-Replayed", "true"), `{"RC":0,"RM":"OK","result":{"batchID":"b","count":2}}`, true},
		{"dry run", "POST", "/messages/batch?dryRun=true", 200, jsonHeader(),
			`{"RC":0,"RM":"OK","result":{"dryRun":true,"count":2,"chunks":1,"sender":"system","preview":[{"index":0,"receiver":"user-a","room":"r","message":"Hi A","extra":{"k":"A"}}]}}`, true},
		{"status", "GET", "/messages/batch/batch-1", 200, jsonHeader(), status, true},
		{"status, whole URL", "GET", "http://127.0.0.1:8080/messages/batch/batch-1", 200, jsonHeader(), status, true},
		{"cancel", "DELETE", "/messages/batch/batch-1", 200, jsonHeader(), status, true},
		{"recall", "POST", "/messages/batch/batch-1/recall", 200, jsonHeader(), status, true},
		{"list", "GET", "/messages/batch?status=running&status=queued", 200, jsonHeader(), `{"RC":0,"RM":"OK","result":{"batches":[],"nextCursor":"x"}}`, true},
		{"messages", "GET", "/messages/batch?batchID=b", 200, jsonHeader(),
			`{"RC":0,"RM":"OK","result":{"count":1,"data":[{"_id":"b-0","room":"r","sender":{"_id":"system"},"message":"m","messageType":"text","messageTimeMS":1,"createdAtMS":1,"updatedAtMS":1,"batchID":"b","index":0,"custom":{"any":1}}]}}`, true},
		{"not found", "GET", "/messages/batch/%00", 404, jsonHeader(),
			`{"RC":404,"RM":"Not Found","error":{"code":"BATCH_NOT_FOUND","message":"m","details":[]}}`, true},
		{"unavailable", "GET", "/messages/batch/b", 503, jsonHeader("Retry-After", "5"),
			`{"RC":503,"RM":"Service Unavailable","error":{"code":"UNAVAILABLE","message":"m","details":[]}}`, true},
		{"head", "HEAD", "/messages/batch/b", 200, http.Header{}, "", true},

		{"count is a string", "POST", "/messages/batch", 200, jsonHeader(), `{"RC":0,"RM":"OK","result":{"batchID":"b","count":"2"}}`, false},
		{"no batchID", "POST", "/messages/batch", 200, jsonHeader(), `{"RC":0,"RM":"OK","result":{"count":2}}`, false},
		{"an undocumented field", "GET", "/messages/batch/b", 200, jsonHeader(), strings.Replace(status, `"count":2`, `"count":2,"speed":9`, 1), false},
		{"an unknown state", "GET", "/messages/batch/b", 200, jsonHeader(), strings.Replace(status, `"completed"`, `"done"`, 1), false},
		{"a time that is not one", "GET", "/messages/batch/b", 200, jsonHeader(), strings.Replace(status, `"2026-11-25T18:40:00.123456Z"`, `1764096000`, 1), false},
		{"a time that is not RFC 3339", "GET", "/messages/batch/b", 200, jsonHeader(), strings.Replace(status, `"2026-11-25T18:40:00.123456Z"`, `"yesterday"`, 1), false},
		{"RC 1", "GET", "/messages/batch/b", 200, jsonHeader(), strings.Replace(status, `"RC":0`, `"RC":1`, 1), false},
		{"no Cache-Control", "GET", "/messages/batch/b", 200, http.Header{"Content-Type": {"application/json; charset=utf-8"}}, status, false},
		{"not JSON", "GET", "/messages/batch/b", 200, http.Header{"Content-Type": {"text/plain"}, "Cache-Control": {"no-store"}}, status, false},
		{"a code of another status", "GET", "/messages/batch/b", 404, jsonHeader(),
			`{"RC":404,"RM":"Not Found","error":{"code":"INVALID_BODY","message":"m","details":[]}}`, false},
		{"an unknown code", "POST", "/messages/batch", 400, jsonHeader(),
			`{"RC":400,"RM":"Bad Request","error":{"code":"OOPS","message":"m","details":[]}}`, false},
		{"details null", "POST", "/messages/batch", 400, jsonHeader(),
			`{"RC":400,"RM":"Bad Request","error":{"code":"INVALID_BODY","message":"m","details":null}}`, false},
		{"a detail's index is a string", "POST", "/messages/batch", 404, jsonHeader(),
			`{"RC":404,"RM":"Not Found","error":{"code":"CLIENT_NOT_FOUND","message":"m","details":[{"index":"0"}]}}`, false},
		{"503 without Retry-After", "GET", "/messages/batch/b", 503, jsonHeader(),
			`{"RC":503,"RM":"Service Unavailable","error":{"code":"UNAVAILABLE","message":"m","details":[]}}`, false},
		{"an undocumented status", "GET", "/messages/batch/b", 418, jsonHeader(),
			`{"RC":418,"RM":"I'm a teapot","error":{"code":"UNAVAILABLE","message":"m","details":[]}}`, false},
		{"an unknown path", "GET", "/messages/batches", 200, jsonHeader(), status, false},
		{"an unknown sub-path", "GET", "/messages/batch/b/other", 404, jsonHeader(),
			`{"RC":404,"RM":"Not Found","error":{"code":"NOT_FOUND","message":"m","details":[]}}`, false},
		{"an unknown method", "PUT", "/messages/batch", 405, jsonHeader("Allow", "GET, HEAD, POST"),
			`{"RC":405,"RM":"Method Not Allowed","error":{"code":"METHOD_NOT_ALLOWED","message":"m","details":[]}}`, false},
		{"HEAD, an undocumented status", "HEAD", "/messages/batch/b", 409, http.Header{}, "", false},
	} {
		err := apispec.Check(c.method, c.path, c.status, c.header, []byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: Check = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// TestCheckRequest: the documented (docs/api.md) and seed's requests pass; what the
// handler would refuse mostly does not.
func TestCheckRequest(t *testing.T) {
	key := http.Header{"Im-Api-Key": {"k"}, "Content-Type": {"application/json; charset=utf-8"}}
	legacy := http.Header{"Api_key": {"k"}, "Content-Type": {"application/json"}}
	for _, c := range []struct {
		name, method, path string
		header             http.Header
		body               string
		ok                 bool
	}{
		{"broadcast", "POST", "/messages/batch", key, seed.Broadcast, true},
		{"template", "POST", "/messages/batch", key, seed.Template, true},
		{"rooms", "POST", "/messages/batch", key, seed.Rooms, true},
		{"the deprecated header", "POST", "/messages/batch", legacy, seed.Rooms, true},
		{"everything", "POST", "/messages/batch?dryRun=true&previewLimit=2", key,
			`{"messageType":"text","message":"Hi $first name$","sender":null,"push":true,"skipTotalBadge":false,"extra":{"k":["$first name$"]},
			  "sendAt":1764096000000,"strictVariables":true,"ratePerMinute":600,
			  "paras":[{"receiver":"user-a","$first name$":"A","$n$":3,"$ok$":true},{"room":"room-001","receiver":null}]}`, true},
		{"sendAt RFC 3339", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","sendAt":"2026-12-01T09:00:00+08:00","paras":[{"room":"r"}]}`, true},
		{"Idempotency-Key", "POST", "/messages/batch", func() http.Header { h := key.Clone(); h.Set("Idempotency-Key", "spring-2026"); return h }(), seed.Rooms, true},
		{"list", "GET", "/messages/batch?status=running&status=queued&limit=20&createdAfter=2026-01-01T00:00:00Z", key, "", true},
		{"messages", "GET", "/messages/batch?batchID=b&limit=2&cursor=x", key, "", true},
		{"recipients", "GET", "/messages/batch/b/recipients?status=failed&offset=3&limit=50", key, "", true},
		{"cancel", "DELETE", "/messages/batch/b", key, "", true},
		{"recall", "POST", "/messages/batch/b/recall", key, "", true},

		{"no key (the host's own authentication)", "POST", "/messages/batch", http.Header{"Content-Type": {"application/json"}}, seed.Rooms, true},
		{"no paras", "POST", "/messages/batch", key, `{"messageType":"t","message":"m"}`, false},
		{"empty paras", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[]}`, false},
		{"a para without receiver or room", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"$a$":"x"}]}`, false},
		{"an unknown para key", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"room":"r","name":"x"}]}`, false},
		{"a variable that is an object", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"room":"r","$a$":{}}]}`, false},
		{"an unknown field", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"room":"r"}],"to":"x"}`, false},
		{"extra is an array", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"room":"r"}],"extra":[]}`, false},
		{"messageType too long", "POST", "/messages/batch", key, `{"messageType":"` + strings.Repeat("x", 65) + `","message":"m","paras":[{"room":"r"}]}`, false},
		{"ratePerMinute 0", "POST", "/messages/batch", key, `{"messageType":"t","message":"m","paras":[{"room":"r"}],"ratePerMinute":0}`, false},
		{"a bad list status", "GET", "/messages/batch?status=done", key, "", false},
		{"a bad recipients status", "GET", "/messages/batch/b/recipients?status=done", key, "", false},
		{"limit 0", "GET", "/messages/batch/b/recipients?limit=0", key, "", false},
	} {
		err := apispec.CheckRequest(c.method, c.path, c.header, []byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: CheckRequest = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
