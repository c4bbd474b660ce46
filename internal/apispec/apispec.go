// Package apispec checks requests and answers of the Batch Send Messages
// API against its OpenAPI 3.1 description, chatbatch.OpenAPI (openapi.yaml
// at the repository root), so that the description cannot drift from what
// the handler does. The end-to-end tests (internal/integration through
// internal/batchtest's hooks, and cmd/chatbatchd) check every answer they
// get.
//
// It uses kin-openapi's openapi3filter, which validates an OpenAPI 3.1
// document's schemas as JSON Schema 2020-12. It lives in internal/ and is
// imported only by tests, so neither an embedder nor package batch's test
// graph reaches it.
package apispec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/chatbatch/chatbatch"
)

// Spec is a loaded and validated description and its router, built once.
type Spec struct {
	doc    *openapi3.T
	router routers.Router
}

var load = sync.OnceValues(func() (*Spec, error) { return Load(chatbatch.OpenAPI) })

// Load parses and validates an OpenAPI 3.1 description (YAML or JSON) and
// builds its router. Check and CheckRequest use chatbatch.OpenAPI; Load is
// for tests of the description itself.
func Load(data []byte) (*Spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("apispec: loading the description: %w", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("apispec: the description is OpenAPI %s, not 3.1", doc.OpenAPI)
	}
	// Example values are checked against their schemas too.
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("apispec: the description is not valid OpenAPI 3.1: %w", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("apispec: routing the description: %w", err)
	}
	return &Spec{doc: doc, router: router}, nil
}

// Doc returns the loaded description (for tests of it).
func Doc() (*openapi3.T, error) {
	s, err := load()
	if err != nil {
		return nil, err
	}
	return s.doc, nil
}

// Check checks one answer of the API against chatbatch.OpenAPI: that the
// description has an operation for method and path (a path as requested,
// with its query, or a whole URL: only its path and query count), that
// the operation documents status, and that the answer's headers and body
// match what the description says of that status. An unknown path,
// method or status is an error. The request itself is not checked: tests
// send invalid requests on purpose.
func Check(method, path string, status int, header http.Header, body []byte) error {
	s, err := load()
	if err != nil {
		return err
	}
	return s.Check(method, path, status, header, body)
}

// CheckRequest checks a request against chatbatch.OpenAPI: its path,
// method, query parameters, headers and body; not its credentials (the
// server's to judge). A request the handler accepted must pass; one it
// refused may not.
func CheckRequest(method, path string, header http.Header, body []byte) error {
	s, err := load()
	if err != nil {
		return err
	}
	return s.CheckRequest(method, path, header, body)
}

// route finds the operation of method and path.
func (s *Spec) route(method, path string, header http.Header, body []byte) (*openapi3filter.RequestValidationInput, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req := &http.Request{
		Method: method, URL: &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Header: header.Clone(), Host: "localhost",
		Body:    io.NopCloser(bytes.NewReader(body)),
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		what := "path"
		if errors.Is(err, routers.ErrMethodNotAllowed) || strings.Contains(err.Error(), routers.ErrMethodNotAllowed.Error()) {
			what = "method"
		}
		return nil, fmt.Errorf("%s %s: openapi.yaml describes no such %s (%v)", method, u.Path, what, err)
	}
	return &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}, nil
}

// Check is the package's Check against s.
func (s *Spec) Check(method, path string, status int, header http.Header, body []byte) error {
	in, err := s.route(method, path, nil, nil)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("%s %s answered %d", method, in.Request.URL.Path, status)
	if in.Route.Operation.Responses.Status(status) == nil {
		return fmt.Errorf("%s: openapi.yaml documents no %d answer for this operation; body: %s", where, status, clip(body))
	}
	if method == http.MethodHead {
		// openapi3filter checks nothing of a HEAD answer; its headers are
		// those of the GET it stands for, checked there.
		return nil
	}
	if header == nil {
		header = http.Header{}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("%s: the answer does not match openapi.yaml: %v\nbody: %s", where, err, clip(body))
	}
	return nil
}

// CheckRequest is the package's CheckRequest against s.
func (s *Spec) CheckRequest(method, path string, header http.Header, body []byte) error {
	in, err := s.route(method, path, header, body)
	if err != nil {
		return err
	}
	in.Options = &openapi3filter.Options{
		MultiError:                        true,
		RejectWhenRequestBodyNotSpecified: true,
		// Who may call is the server's to judge: besides the API key
		// headers the description names, a host may authenticate requests
		// by its own means (Config.AuthenticateRequest), which no security
		// scheme can describe.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}
	if len(body) == 0 {
		in.Request.Body, in.Request.GetBody = http.NoBody, nil
	}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s: the request does not match openapi.yaml: %v\nbody: %s", method, in.Request.URL.Path, err, clip(body))
	}
	return nil
}

// clip shortens a body for an error message.
func clip(b []byte) string {
	const max = 2000
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
