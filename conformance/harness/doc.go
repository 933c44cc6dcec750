// Package harness starts a real, throw-away Kubernetes control plane (etcd,
// kube-apiserver and optionally kube-controller-manager) on loopback for the
// project's integration and conformance tests.
package harness
