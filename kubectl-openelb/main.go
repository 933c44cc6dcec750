// Command kubectl-openelb is the kubectl openelb plugin: installed on the
// PATH, `kubectl openelb status` and `kubectl openelb pools` run it. The
// work is in package plugin.
package main

import (
	"os"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openelb/cloud-provider-openelb/kubectl-openelb/plugin"
)

func main() {
	// The API client is controller-runtime's, which complains on stderr
	// when it has no logger; a one-shot command has nothing to log.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(plugin.Main(os.Args[1:], os.Stdout, os.Stderr))
}
