package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// healthcheck is chatbatchd -healthcheck URL: GET URL and exit 0 on a 2xx
// answer within 5 s, else 1. It is for images without curl (distroless):
// a container health check runs the binary itself, e.g.
//
//	chatbatchd -healthcheck http://127.0.0.1:8080/readyz
//
// main runs it before the other flags are parsed; it starts nothing.
func healthcheck(target string, stderr io.Writer) int {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "chatbatchd -healthcheck: %q is not an http:// or https:// URL\n", target)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "chatbatchd -healthcheck: %v\n", err)
		return 2
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "chatbatchd -healthcheck: %v\n", err)
		return 1
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	if res.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "chatbatchd -healthcheck: %s answered %s\n", u.Redacted(), res.Status)
		return 1
	}
	return 0
}

// healthcheckArgs reports whether args ask for -healthcheck URL (also
// --healthcheck, -healthcheck=URL), and the URL.
func healthcheckArgs(args []string) (string, bool) {
	if len(args) == 0 {
		return "", false
	}
	for _, name := range []string{"-healthcheck", "--healthcheck"} {
		if args[0] == name {
			if len(args) == 2 {
				return args[1], true
			}
			return "", true
		}
		if v, ok := strings.CutPrefix(args[0], name+"="); ok && len(args) == 1 {
			return v, true
		}
	}
	return "", false
}
