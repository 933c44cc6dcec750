package netlab

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestSeed000Fabric(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("netlab needs root (the test harness runs as root)")
	}
	ctx := context.Background()
	l, err := New("nlt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	start := time.Now()
	s, err := BuildSeed000(ctx, l, Seed000Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fabric up in %v", time.Since(start))
	// The client reaches every node through spine and leaves (connected
	// subnets are redistributed), which is what Service traffic needs.
	for _, n := range s.Nodes {
		ln, err := l.ListenTCP(n.NS, n.IP+":8080")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(n.Name))
				_ = c.Close()
			}
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := DialTCP(s.Client, n.IP+":8080", time.Second)
			if err == nil {
				buf := make([]byte, 64)
				k, _ := c.Read(buf)
				c.Close()
				if string(buf[:k]) != n.Name {
					t.Errorf("%s answered %q", n.IP, buf[:k])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client cannot reach %s (%s): %v", n.Name, n.IP, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
