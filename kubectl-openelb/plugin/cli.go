package plugin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
)

// usage is the help text (-h, help, and after a usage error).
const usage = `kubectl openelb shows what openelb does for LoadBalancer Services.

Usage:
  kubectl openelb status [SERVICE] [flags]   per Service: addresses, pools, and who announces them
  kubectl openelb pools [flags]              per pool (Eip): usage, readiness, the Services holding its addresses

Flags:
  -n, --namespace NAME          namespace of the Services (default: the kubeconfig context's)
  -A, --all-namespaces          status of the LoadBalancer Services of every namespace
      --openelb-namespace NAME  namespace openelb runs in, where the speakers keep their
                                layer-2 node Leases (default openelb-system)
      --kubeconfig FILE         kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
      --context NAME            kubeconfig context to use
      --cluster NAME            kubeconfig cluster to use
      --user NAME               kubeconfig user to use
      --request-timeout DUR     give up on the API server after this long (default 30s)
`

// DefaultOpenELBNamespace is the namespace the chart and the manifests
// install openelb in, and the speakers' default for their Leases.
const DefaultOpenELBNamespace = "openelb-system"

// options are the command line.
type options struct {
	command, service string
	namespace        string
	allNamespaces    bool
	openelbNamespace string
	kubeconfig       string
	context          string
	cluster          string
	user             string
	timeout          time.Duration
	help             bool
}

// Main runs the plugin with the arguments after the program name and
// returns the exit code: 0, 1 on an error, 2 on a usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	switch {
	case o.help:
		fmt.Fprint(stdout, usage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usage)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := run(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

// parseArgs reads the command line. Flags may come anywhere, before or
// after the command and the Service, as kubectl takes them; the standard
// flag package stops at the first argument that is not a flag, so this
// parses again after each one. (Not pflag and cli-runtime's
// genericclioptions: the module does not otherwise depend on them, and
// the few flags here need neither.)
func parseArgs(args []string) (options, error) {
	o := options{timeout: 30 * time.Second, openelbNamespace: DefaultOpenELBNamespace}
	fs := flag.NewFlagSet("kubectl-openelb", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"n", "namespace"} {
		fs.StringVar(&o.namespace, name, "", "")
	}
	for _, name := range []string{"A", "all-namespaces"} {
		fs.BoolVar(&o.allNamespaces, name, false, "")
	}
	for _, name := range []string{"h", "help"} {
		fs.BoolVar(&o.help, name, false, "")
	}
	fs.StringVar(&o.openelbNamespace, "openelb-namespace", o.openelbNamespace, "")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&o.context, "context", "", "")
	fs.StringVar(&o.cluster, "cluster", "", "")
	fs.StringVar(&o.user, "user", "", "")
	fs.DurationVar(&o.timeout, "request-timeout", o.timeout, "")

	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if o.help {
		return o, nil
	}
	if len(positional) == 0 {
		return o, errors.New("no command given")
	}
	o.command, positional = positional[0], positional[1:]
	switch o.command {
	case "help":
		o.help = true
	case "status":
		if len(positional) > 1 {
			return o, fmt.Errorf("status takes at most one Service, got %s", strings.Join(positional, " "))
		}
		if len(positional) == 1 {
			o.service = positional[0]
			if o.allNamespaces {
				return o, errors.New("a Service name and --all-namespaces exclude each other")
			}
		}
	case "pools":
		if len(positional) > 0 {
			return o, fmt.Errorf("pools takes no argument, got %s", strings.Join(positional, " "))
		}
	default:
		return o, fmt.Errorf("unknown command %q (want status or pools)", o.command)
	}
	if o.openelbNamespace == "" {
		return o, errors.New("--openelb-namespace must not be empty")
	}
	if o.timeout <= 0 {
		return o, fmt.Errorf("--request-timeout must be positive, got %s", o.timeout)
	}
	return o, nil
}

// run connects as kubectl would (the same kubeconfig loading rules and
// overrides) and runs the command.
func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	overrides.Context.Cluster = o.cluster
	overrides.Context.AuthInfo = o.user
	overrides.Context.Namespace = o.namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-openelb"
	cfg.Timeout = o.timeout
	c, err := client.New(cfg, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}
	f := &fetcher{c: c, now: time.Now, openelbNamespace: o.openelbNamespace}

	switch o.command {
	case "pools":
		in, err := f.poolsInput(ctx)
		if err != nil {
			return err
		}
		if len(in.Eips) == 0 && len(in.Claims) == 0 {
			fmt.Fprintln(stderr, "No Eip (address pool) found.")
			return nil
		}
		_, err = io.WriteString(stdout, RenderPools(in))
		return err
	default: // status
		ns, _, err := cc.Namespace()
		if err != nil {
			return fmt.Errorf("choosing the namespace: %w", err)
		}
		if o.allNamespaces {
			ns = ""
		}
		in, err := f.statusInput(ctx, ns, o.service)
		if err != nil {
			return err
		}
		if len(in.Services) == 0 {
			fmt.Fprintf(stderr, "No LoadBalancer Service served by openelb found%s.\n", inNamespace(ns))
			return nil
		}
		_, err = io.WriteString(stdout, RenderStatus(in))
		return err
	}
}
