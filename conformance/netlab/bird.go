package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// BIRD is one BIRD 2 instance in a namespace, the second router
// implementation of the lab (Debian's bird2). It runs in the foreground
// with its own control socket, so the lab owns its PID.
type BIRD struct {
	Name string
	NS   string
	sock string
	Proc *Proc
}

// StartBIRD starts bird with config inside ns and returns once birdc
// answers.
func (l *Lab) StartBIRD(ctx context.Context, name, ns, config string) (*BIRD, error) {
	dir := filepath.Join(l.dir, "bird-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		return nil, err
	}
	r := &BIRD{Name: name, NS: ns, sock: filepath.Join(dir, "bird.ctl")}
	p, err := l.Start(ns, name+"-bird", "bird", "-f", "-c", conf, "-s", r.sock, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	r.Proc = p
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := r.Birdc(ctx, "show status"); err == nil {
			return r, nil
		} else if time.Now().After(deadline) || p.Exited() {
			return nil, fmt.Errorf("%s: bird not answering: %w\n%s", name, err, p.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Birdc runs one birdc command.
func (r *BIRD) Birdc(ctx context.Context, cmd ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", r.sock}, cmd...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s on %s: %w: %s", strings.Join(cmd, " "), r.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Established says whether the BGP protocol named proto is up
// (`show protocols`: "name BGP --- up <since> Established").
func (r *BIRD) Established(ctx context.Context, proto string) (bool, error) {
	out, err := r.Birdc(ctx, "show", "protocols", proto)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == proto {
			return strings.Contains(line, "Established"), nil
		}
	}
	return false, fmt.Errorf("%s: no protocol %s in %q", r.Name, proto, out)
}

// Routes is BIRD's text of the routes it holds for prefix, every path
// with its attributes (`show route for PREFIX all`).
func (r *BIRD) Routes(ctx context.Context, prefix string) (string, error) {
	return r.Birdc(ctx, "show", "route", "for", prefix, "all")
}

// birdLeafTmpl is a leaf: the speakers of its rack as eBGP neighbors with
// ADD-PATH receive (one protocol per node address), the spine as an eBGP
// neighbor, connected subnets announced, BGP routes merged into ECMP
// kernel routes.
var birdLeafTmpl = template.Must(template.New("bird").Parse(`router id {{.RouterID}};
protocol device { scan time 1; }
protocol direct { ipv4; interface "rack", "spine"; }
protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths on limit 16;
}
protocol bgp spine {
	local as {{.AS}};
	neighbor {{.Spine}} as {{.SpineAS}};
	hold time 3; keepalive time 1; connect retry time 1;
	ipv4 { import all; export all; next hop self; };
}
template bgp speakers {
	local as {{.AS}};
	hold time 9; keepalive time 3; connect retry time 1;
{{- if .Password}}
	password "{{.Password}}";
{{- end}}
	ipv4 { import all; export none; add paths rx; };
}
{{- range .Nodes}}
protocol bgp {{.Proto}} from speakers { neighbor {{.Addr}} external; }
{{- end}}
`))

type birdNode struct{ Proto, Addr string }

// BIRDProto is the name of the BGP protocol a BIRD leaf runs with the
// speaker at addr ("n192_168_1_2").
func BIRDProto(addr string) string {
	return "n" + strings.NewReplacer(".", "_", ":", "_").Replace(addr)
}
