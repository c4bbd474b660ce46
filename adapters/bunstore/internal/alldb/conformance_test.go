package alldb_test

import (
	"testing"

	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

// TestConformance runs the whole store suite on every backend, each
// subtest on its own table prefix in the backend's one shared pool.
func TestConformance(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, db, nil) }, nil)
	})
}
