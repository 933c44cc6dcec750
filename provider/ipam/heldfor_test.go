package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

// TestHeldFor: an address held for a Service (an admin's reservation) is
// never handed out automatically, is refused to another Service asking for
// it, and goes to its Service in place when that one asks for it.
func TestHeldFor(t *testing.T) {
	a := New()
	if err := a.SetPools([]Pool{pool("p", "10.0.0.0/30", isDefault)}); err != nil {
		t.Fatal(err)
	}
	x := mustAddr("10.0.0.0")
	if _, err := a.Assign(HeldFor("ns/future"), []netip.Addr{x}, Sharing{}, nil); err != nil {
		t.Fatal(err)
	}
	as, err := a.Allocate(Request{Service: "ns/auto", Namespace: "ns", Families: []Family{IPv4}})
	if err != nil || as[0].Addr != mustAddr("10.0.0.1") {
		t.Errorf("automatic allocation = %v, %v; want 10.0.0.1", as, err)
	}
	if _, err := a.Allocate(Request{Service: "ns/thief", Namespace: "ns", Families: []Family{IPv4}, Addresses: []netip.Addr{x}}); !errors.Is(err, ErrAddressTaken) {
		t.Errorf("another Service asking for the held address: %v, want ErrAddressTaken", err)
	}
	as, err = a.Allocate(Request{Service: "ns/future", Namespace: "ns", Families: []Family{IPv4}, Addresses: []netip.Addr{x}})
	if err != nil || as[0].Addr != x {
		t.Fatalf("the Service it is held for = %v, %v; want %s", as, err, x)
	}
	if got := a.Owners(x); len(got) != 1 || got[0] != "ns/future" {
		t.Errorf("owners of %s = %v, want only ns/future", x, got)
	}
	if got := a.Lookup(HeldFor("ns/future")); len(got) != 0 {
		t.Errorf("the placeholder still holds %v", got)
	}
	st, _ := a.Stats("p")
	if st.Used != 2 {
		t.Errorf("pool usage %d, want 2", st.Used)
	}
}
