// Command chatbatch-bench measures chatbatch end to end — the HTTP API,
// asynq on Redis, the worker and bunstore on a real database — beside
// baselines measured in the same process and interleaved with it: plain
// multi-row INSERTs of the same rows through database/sql, pgx CopyFrom
// (PostgreSQL, the ceiling) and the naive design of one asynq task per
// recipient. It prints one table row per scenario and database with the
// issue's target and PASS or FAIL.
//
//	go run ./cmd/chatbatch-bench -postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	    -mysql 'root@tcp(127.0.0.1:3306)/test'
//	go run ./cmd/chatbatch-bench -quick      # under a minute
//
// Run chatbatch-bench -h for the flags. Every run is verified (each
// message stored exactly once, each batch completed with nothing failed);
// a failed verification exits with status 1. A missed target is only
// reported, unless -strict is given (exit status 3).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerProcessFlag { // the workers scenario's processes
		os.Exit(workerProcessMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
