// Package leakcheck holds the goroutine-leak test of the batch Service:
// it runs alone in its package, because goleak checks every goroutine of
// the test binary and batch's own tests run in parallel.
package leakcheck
