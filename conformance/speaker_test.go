package conformance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// testRouter is a GoBGP instance standing in for leaf1 on loopback
// (127.0.0.2): it accepts the speaker's session and records what it learns.
type testRouter struct {
	srv  *server.BgpServer
	port int
}

func startTestRouter(t *testing.T, gracefulRestart bool) *testRouter {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv := server.NewBgpServer()
	go srv.Serve()
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65002, RouterId: "127.0.0.2", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.2"},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	peer := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis: []*api.AfiSafi{{
			Config:   &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			AddPaths: &api.AddPaths{Config: &api.AddPathsConfig{Receive: true}},
		}},
	}
	if gracefulRestart {
		// Helper mode: keep the speaker's routes as stale while it restarts.
		peer.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 60}
		peer.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	err = srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer})
	if err != nil {
		t.Fatal(err)
	}
	return &testRouter{srv: srv, port: port}
}

// nextHops lists the next hops the router holds for prefix.
func (r *testRouter) nextHops(prefix string) []string {
	var out []string
	_ = r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL,
		Family: bgp.RF_IPv4_UC}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
		if nlri.String() != prefix {
			return
		}
		for _, p := range paths {
			for _, a := range p.Attrs {
				if nh, ok := a.(*bgp.PathAttributeNextHop); ok {
					out = append(out, nh.Value.String())
				}
			}
		}
	})
	slices.Sort(out)
	return out
}

func (r *testRouter) waitNextHops(t *testing.T, what, prefix string, want []string) {
	t.Helper()
	var got []string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		got = r.nextHops(prefix)
		return slices.Equal(got, want), nil
	})
	if err != nil {
		t.Fatalf("%s: router holds next hops %v for %s, want %v", what, got, prefix, want)
	}
}

// TestSpeakerAdvertisesPlan runs the real openelb-speaker binary as master1
// of seed 000 against the real control plane and CCM. Its BgpPeer (leaf1)
// is a GoBGP router on loopback; master1's rack next hops reach it as two
// ADD-PATH paths, follow node readiness live, are reported in the BgpPeer
// and plan statuses, and are withdrawn on SIGTERM.
// newSpeakerLab is seed 000 with the CCM, the nodes, a pool, and leaf1 as a
// GoBGP router on loopback; startSpeaker runs openelb-speaker as master1.
func newSpeakerLab(t *testing.T, gracefulRestart bool) (*lab, *testRouter, int, func() *harness.Component) {
	t.Helper()
	l := newNodeLab(t)
	ctx := context.Background()
	l.ccm("ccm")
	l.createSeedNodes()
	router := startTestRouter(t, gracefulRestart)

	conf := v1alpha2.BgpConfSpec{As: 65001}
	var peerGR *v1alpha2.GracefulRestart
	if gracefulRestart {
		conf.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true, RestartTime: 60}
		peerGR = &v1alpha2.GracefulRestart{Enabled: true}
	}
	if err := l.crd.Create(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: conf}); err != nil {
		t.Fatal(err)
	}
	if err := l.crd.Create(ctx, &v1alpha2.BgpPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "leaf1"},
		Spec: v1alpha2.BgpPeerSpec{
			Conf:            &v1alpha2.PeerConf{PeerAs: 65002, NeighborAddress: "127.0.0.2"},
			Transport:       &v1alpha2.Transport{RemotePort: uint32(router.port)},
			Timers:          &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}},
			GracefulRestart: peerGR,
			NodeSelector:    &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: "leaf1"}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	l.eip("eip-sample-pool", "172.22.0.2-172.22.0.10", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		t.Fatal(err)
	}
	healthPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	start := func() *harness.Component {
		t.Helper()
		runs++
		cmd, args, err := harness.SpeakerCommand(bin, "--kubeconfig="+l.cp.Kubeconfig, "--node-name=master1",
			fmt.Sprintf("--health-address=127.0.0.1:%d", healthPort), "--v=2")
		if err != nil {
			t.Fatal(err)
		}
		speaker, err := l.cp.StartComponent(fmt.Sprintf("speaker-master1-%d", runs), cmd, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- speaker log tail ---\n%s", speaker.LogTail(40))
			}
			_ = speaker.Stop()
		})
		return speaker
	}
	return l, router, healthPort, start
}

func TestSpeakerAdvertisesPlan(t *testing.T) {
	l, router, healthPort, startSpeaker := newSpeakerLab(t, false)
	ctx := context.Background()
	speaker := startSpeaker()
	l.create(newService("default", "nginx"))
	if ips := l.waitIPs("default", "nginx", 1, ipTimeout); ips[0] != netip.MustParseAddr("172.22.0.2") {
		t.Fatalf("got %v, want 172.22.0.2", ips)
	}
	router.waitNextHops(t, "seed plan", "172.22.0.2/32", []string{"192.168.0.3", "192.168.0.4"})

	// Status: the BgpPeer and master1's LoadBalancerSpeaker carry its report.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var bp v1alpha2.BgpPeer
		if err := l.crd.Get(ctx, client.ObjectKey{Name: "leaf1"}, &bp); err != nil {
			return false, nil
		}
		st := bp.Status.NodesPeerStatus["master1"].PeerState
		var sp v1alpha2.LoadBalancerSpeaker
		if err := l.crd.Get(ctx, client.ObjectKey{Name: "master1"}, &sp); err != nil {
			return false, nil
		}
		return st.SessionState == "established" && st.AddPathNegotiated &&
			sp.Status.Announcing && sp.Status.Prefixes == 1 && sp.Status.Paths == 2 && sp.Status.SessionsEstablished == 1, nil
	})
	if err != nil {
		t.Errorf("master1 never reported an established ADD-PATH session and its 2 paths: %v", err)
	}

	// Metrics on the speaker's health port.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", healthPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`openelb_bgp_session_up{peer="leaf1"} 1`, `openelb_bgp_advertised_paths{peer="leaf1"} 2`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("speaker /metrics lacks %s", want)
		}
	}

	l.setReady("worker-p001", false)
	router.waitNextHops(t, "worker-p001 NotReady", "172.22.0.2/32", []string{"192.168.0.3"})
	l.setReady("worker-p001", true)
	router.waitNextHops(t, "worker-p001 Ready again", "172.22.0.2/32", []string{"192.168.0.3", "192.168.0.4"})

	// SIGTERM without graceful restart withdraws at once.
	if err := speaker.Stop(); err != nil {
		t.Fatal(err)
	}
	router.waitNextHops(t, "after SIGTERM", "172.22.0.2/32", nil)
}

// TestSpeakerGracefulRestartKeepsRoutes restarts the speaker the way a
// rolling update does (SIGTERM, new process) with graceful restart on both
// sides: the router keeps the paths throughout - zero route churn.
func TestSpeakerGracefulRestartKeepsRoutes(t *testing.T) {
	l, router, _, startSpeaker := newSpeakerLab(t, true)
	speaker := startSpeaker()
	l.create(newService("default", "nginx"))
	l.waitIPs("default", "nginx", 1, ipTimeout)
	want := []string{"192.168.0.3", "192.168.0.4"}
	router.waitNextHops(t, "before the restart", "172.22.0.2/32", want)

	// Watch the router's table every 20ms through the restart.
	stop := make(chan struct{})
	lost := make(chan []string, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if got := router.nextHops("172.22.0.2/32"); !slices.Equal(got, want) {
				select {
				case lost <- got:
				default:
				}
			}
		}
	}()
	if err := speaker.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the old process is gone; routes are stale at the router
	startSpeaker()
	// Let the new session come up and the new process re-advertise.
	time.Sleep(8 * time.Second)
	close(stop)
	select {
	case got := <-lost:
		t.Errorf("the router's paths changed during the graceful restart: saw next hops %v, want %v throughout", got, want)
	default:
	}
	router.waitNextHops(t, "after the restart", "172.22.0.2/32", want)
}
