// Command controlplane starts a throw-away etcd + kube-apiserver +
// kube-controller-manager (see package harness), prints how to reach it and
// runs until SIGINT/SIGTERM, then stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

func main() {
	var opts harness.Options
	flag.StringVar(&opts.BinDir, "bin-dir", "", "directory with etcd, kube-apiserver, kube-controller-manager, kubectl (default $OPENELB_BIN_DIR or <repo>/.cache/bin)")
	flag.StringVar(&opts.LogDir, "log-dir", "", "directory for process logs (default: inside the temp dir)")
	flag.BoolVar(&opts.Keep, "keep", false, "keep the temp dir (certs, kubeconfigs, logs) after stopping")
	noKCM := flag.Bool("no-controller-manager", false, "do not run kube-controller-manager")
	flag.Parse()
	opts.ControllerManager = !*noKCM

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	cp, err := harness.Start(startCtx, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		os.Exit(1)
	}
	fmt.Printf("control plane ready in %v at %s\n", cp.StartupDuration.Round(time.Millisecond), cp.APIServerURL)
	fmt.Printf("kubeconfig: %s\n", cp.Kubeconfig)
	fmt.Printf("logs: %s\n", cp.LogDir())
	fmt.Printf("export KUBECONFIG=%s\n", cp.Kubeconfig)
	fmt.Println("press Ctrl-C to stop")

	<-ctx.Done()
	fmt.Println("stopping...")
	if err := cp.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop:", err)
		os.Exit(1)
	}
}
