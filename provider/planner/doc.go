// Package planner decides, without touching Kubernetes, what each rack
// announces for the LoadBalancer Services: which of its speakers send the
// Services' BGP addresses to which peers, with which of its nodes as next
// hops, and why any part of that cannot happen. The answer is the same for
// every Service (externalTrafficPolicy Local only narrows the next hops to
// the nodes with an endpoint), so it is computed per rack, and a node event
// changes one rack's answer, not one per Service.
package planner
