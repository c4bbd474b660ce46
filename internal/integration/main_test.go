package integration_test

import (
	"os"
	"testing"

	"github.com/chatbatch/chatbatch/internal/apispec"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// TestMain checks every request the handler accepts and every answer it
// gives through batchtest's Env against openapi.yaml (internal/apispec): a
// mismatch fails the test that made the request.
func TestMain(m *testing.M) {
	bt.CheckResponse = apispec.Check
	bt.CheckRequest = apispec.CheckRequest
	os.Exit(m.Run())
}
