// Package ipam hands out LoadBalancer IP addresses from operator-defined pools without depending on Kubernetes.
package ipam
