package main

import "testing"

func TestListenAddress(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"127.0.0.1:10262", "127.0.0.1:10262"},
		{"[192.168.0.3]:10262", "192.168.0.3:10262"}, // [$(HOST_IP)] on an IPv4 node
		{"[fd00::3]:10262", "[fd00::3]:10262"},
		{"localhost:10262", "localhost:10262"},
		{":10262", ":10262"}, // every address, when asked for
		{"[]:10262", ""},     // $(HOST_IP) expanded to nothing
		{"[$(HOST_IP)]:10262", ""},
		{"node1:10262", ""},
		{"127.0.0.1", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:65536", ""},
		{"127.0.0.1:http", ""},
	} {
		got, err := listenAddress(c.in)
		if c.want == "" {
			if err == nil {
				t.Errorf("listenAddress(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("listenAddress(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
