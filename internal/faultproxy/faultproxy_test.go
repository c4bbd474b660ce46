package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestModes(t *testing.T) {
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, "one", 5*time.Second); err != nil || got != "one\n" {
		t.Fatalf("pass: %q, %v", got, err)
	}

	// Blackhole: the read waits; after the heal the held-back data arrives.
	p.SetMode(Blackhole)
	if _, err := roundTrip(c, r, "two", 300*time.Millisecond); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		t.Fatalf("blackhole: read returned %v, want a timeout", err)
	}
	p.SetMode(Pass)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("after the blackhole healed: %q, %v; want the held-back line", got, err)
	}

	// Latency delays each forwarded chunk.
	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, r, "three", 5*time.Second); err != nil || got != "three\n" {
		t.Fatalf("latency: %q, %v", got, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("a round trip with 100 ms latency each way took %v", took)
	}
	p.SetLatency(0)

	// Reset: the open connection breaks, and so do new ones.
	p.SetMode(Reset)
	if _, err := roundTrip(c, r, "four", 5*time.Second); err == nil {
		t.Fatal("reset: the open connection still works")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c2.Read(make([]byte, 1))
		c2.Close()
	}
	if err == nil {
		t.Fatal("reset: a new connection works")
	}
	p.SetMode(Pass)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, bufio.NewReader(c3), "five", 5*time.Second); err != nil || got != "five\n" {
		t.Fatalf("after the reset: %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
