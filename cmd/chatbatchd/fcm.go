package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"sync"

	"github.com/chatbatch/chatbatch/adapters/fcm"
)

// deviceTokens is -fcm-tokens: chatbatchd's tables (bunstore's users,
// rooms and messages) keep no device tokens, so they come from a JSON
// file {"<app>":{"<user>":["<token>",…]}} read once at start. A token FCM
// reports invalid is dropped from memory (and logged), not from the file.
type deviceTokens struct {
	mu sync.RWMutex
	m  map[string]map[string][]string
}

func loadDeviceTokens(path string) (*deviceTokens, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]map[string][]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: not {\"<app>\":{\"<user>\":[\"<token>\",…]}}: %v", path, err)
	}
	return &deviceTokens{m: m}, nil
}

// Tokens implements fcm.Tokens.
func (d *deviceTokens) Tokens(_ context.Context, app string, users []string) (map[string][]string, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string][]string, len(users))
	for _, u := range users {
		if ts := d.m[app][u]; len(ts) > 0 {
			out[u] = slices.Clone(ts)
		}
	}
	return out, nil
}

func (d *deviceTokens) drop(app, user, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if users := d.m[app]; users != nil {
		users[user] = slices.DeleteFunc(users[user], func(t string) bool { return t == token })
	}
}

// checkFCM checks the -push fcm flags and reads -fcm-tokens; it builds
// the pusher once (fcm.New reads and checks the service-account key and
// fetches nothing), so a bad key is a usage error naming the file and
// the field.
func (o *options) checkFCM() error {
	switch {
	case o.fcmCredentials == "":
		return usagef("-push fcm: -fcm-credentials is required (the service-account key, a JSON file)")
	case o.fcmTokensFile == "":
		return usagef("-push fcm: -fcm-tokens is required (the device tokens, a JSON file)")
	}
	if u, err := url.Parse(o.fcmEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return usagef("-fcm-endpoint: %q is not an http(s) base URL", o.fcmEndpoint)
	}
	toks, err := loadDeviceTokens(o.fcmTokensFile)
	if err != nil {
		return usagef("-fcm-tokens: %v", err)
	}
	o.fcmTokens = toks
	if _, err := o.newFCMPusher(nil); err != nil {
		return usagef("-fcm-credentials: %v", err)
	}
	return nil
}

// newFCMPusher is the -push fcm Pusher; with a logger, invalid tokens are
// logged and dropped.
func (o *options) newFCMPusher(log *slog.Logger) (*fcm.Pusher, error) {
	opts := &fcm.Options{CredentialsFile: o.fcmCredentials, Endpoint: o.fcmEndpoint, Tokens: o.fcmTokens}
	if log != nil {
		tokens := o.fcmTokens
		opts.OnInvalidToken = func(_ context.Context, app, user, token string, reason error) {
			tokens.drop(app, user, token)
			log.Warn("fcm: dropped an invalid device token", "app", app, "user", user, "err", reason)
		}
	}
	return fcm.New(opts)
}
