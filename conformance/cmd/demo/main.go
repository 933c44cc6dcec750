// Command demo (make demo) brings up the local lab - a real kube-apiserver,
// etcd and kube-controller-manager plus the openelb CCM - applies an Eip and
// a LoadBalancer Service, prints the Service with its address and what the
// provider recorded, and tears everything down (or waits with -wait).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

func main() {
	keep := flag.Bool("wait", false, "keep the lab running until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(ctx context.Context, keep bool) error {
	step("starting etcd, kube-apiserver and kube-controller-manager (--cloud-provider=external)")
	cp, err := harness.Start(ctx, harness.Options{ControllerManager: true})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		_ = cp.Stop()
	}()
	fmt.Printf("control plane up in %s; export KUBECONFIG=%s\n", cp.StartupDuration.Round(time.Millisecond), cp.Kubeconfig)

	step("installing the CRDs and starting openelb-cloud-controller-manager --cloud-provider=openelb")
	if err := cp.ApplyCRDs(ctx); err != nil {
		return err
	}
	if err := cp.EnsureNamespace(ctx, harness.CCMNamespace, nil); err != nil {
		return err
	}
	ccm, err := cp.StartCCM("openelb-cloud-controller-manager")
	if err != nil {
		return err
	}
	defer ccm.Stop()

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		out, err := cp.Kubectl(ctx, args...)
		fmt.Print(out)
		return err
	}
	step("applying an OpenELB Eip and a LoadBalancer Service")
	for _, f := range []string{"eip-bgp.yaml", "service.yaml"} {
		if err := kubectl("apply", "-f", filepath.Join(root, "deploy", "samples", f)); err != nil {
			return err
		}
	}

	step("waiting for the Service's address")
	var ip string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := cp.Client().CoreV1().Services("default").Get(ctx, "nginx", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	if err != nil {
		fmt.Print(ccm.LogTail(30))
		return fmt.Errorf("the Service got no address: %w", err)
	}
	fmt.Printf("Service default/nginx has address %s\n", ip)
	// Give the plan and the Eip status their few milliseconds.
	time.Sleep(time.Second)
	for _, args := range [][]string{
		{"get", "service", "nginx", "-o", "wide"},
		{"get", "eip"},
		{"get", "lbplan", "-A"},
		{"get", "ipclaims"},
		{"get", "events", "--field-selector", "involvedObject.name=nginx"},
	} {
		if err := kubectl(args...); err != nil {
			return err
		}
	}
	if keep {
		step("lab running; KUBECONFIG=%s; Ctrl-C to stop", cp.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}
