// Package alldb holds the tests and benchmarks of bunstore on every
// database it supports: SQLite (in memory and in a file) always,
// PostgreSQL and MySQL/MariaDB when CHATBATCH_TEST_POSTGRES and
// CHATBATCH_TEST_MYSQL name one. It has no code of its own.
//
// The tests live here, not beside bunstore, because `go mod tidy` in a
// program resolves the imports of the tests of every package the program
// imports: tests in package bunstore that open SQLite and MySQL would put
// those drivers in the go.sum of a program that uses bunstore on
// PostgreSQL only (TestEmbedderGoSum in the repository's root checks
// this). Nothing imports this package, so its tests cost an embedder
// nothing.
package alldb
