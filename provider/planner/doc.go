// Package planner decides, without touching Kubernetes, which speakers in
// each rack advertise a LoadBalancer Service's addresses to which BGP peers
// and with which next hops, and explains why any part of that cannot happen.
package planner
