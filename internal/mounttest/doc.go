// Package mounttest holds tests only: they mount the batch API
// (batch.Service.Handler) and the dashboard (dashboard.New) under
// net/http's ServeMux, chi, gin and echo, at the root and under a prefix,
// with the very lines docs/embedding.md shows, and check each mount
// through a real HTTP server (and the dashboard's live view under chi in a
// headless Chromium). The routers are dependencies of these tests only:
// no package a host imports reaches them.
package mounttest
