// Package controller is the service controller the openelb CCM runs in the
// framework's service-lb-controller slot: it drives the same
// cloudprovider.LoadBalancer, with one API write per Service (finalizer and
// status in a single patch) instead of the framework's two patches and two
// events, which is what lets a burst of Services get addresses as fast as
// the API server accepts them.
package controller
