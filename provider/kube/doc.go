// Package kube adapts Kubernetes (informer caches, typed clients, the event
// recorder) to the small interfaces provider/cloud is written against, so the
// provider's logic never touches client-go directly.
package kube
