package bunstore

import "context"

// CreateSchemaV1 creates the tables as the first release's Migrate did,
// with no migrations table: a database for an upgrade test.
func (s *Store) CreateSchemaV1(ctx context.Context) error { return s.createV1(ctx, s.db) }
