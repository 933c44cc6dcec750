package v1alpha2

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Field support of the OpenELB kinds. OpenELB manifests apply unchanged,
// so every field they may set is accepted; each one is either carried out
// (Honoured) or, when set, reported on the object by the CCM: condition
// Unsupported, reason UnsupportedField, a message naming each such field
// and why. TestFieldSupport lists every spec field of BgpConf, BgpPeer and
// Eip and fails when one is in neither list.

// Honoured marks a field the provider carries out.
const Honoured = ""

// BgpConfFields: spec fields of BgpConf, by JSON path ("[]" for list
// items), and why each unsupported one has no effect.
var BgpConfFields = map[string]string{
	"spec.as":                                  Honoured,
	"spec.asPerRack":                           Honoured,
	"spec.routerId":                            Honoured,
	"spec.listenPort":                          Honoured,
	"spec.listenAddresses":                     Honoured,
	"spec.families":                            "the speakers always run IPv4 and IPv6 unicast; restrict a session's families with the BgpPeer's spec.afiSafis",
	"spec.useMultiplePaths":                    "it changes how GoBGP picks among routes it receives, and the speakers use none",
	"spec.gracefulRestart.enabled":             Honoured,
	"spec.gracefulRestart.restartTime":         Honoured,
	"spec.gracefulRestart.helperOnly":          Honoured,
	"spec.gracefulRestart.deferralTime":        Honoured,
	"spec.gracefulRestart.notificationEnabled": Honoured,
	"spec.gracefulRestart.longlivedEnabled":    "long-lived graceful restart is set per BgpPeer (spec.gracefulRestart.longlivedEnabled and staleRoutesTime)",
	"spec.gracefulRestart.staleRoutesTime":     "long-lived graceful restart is set per BgpPeer (spec.gracefulRestart.longlivedEnabled and staleRoutesTime)",
	"spec.gracefulRestart.peerRestartTime":     "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.peerRestarting":      "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.localRestarting":     "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.mode":                "it is session state GoBGP reports, not configuration",
	"spec.gracefulShutdown.enabled":            Honoured,
	"spec.gracefulShutdown.delaySeconds":       Honoured,
	"spec.gracefulShutdown.taints":             Honoured,
	"spec.policy":                              Honoured,
}

// BgpPeerFields: spec fields of BgpPeer, as BgpConfFields.
var BgpPeerFields = map[string]string{
	"spec.conf.authPassword":                           Honoured,
	"spec.conf.authPasswordSecretRef":                  Honoured,
	"spec.conf.description":                            Honoured,
	"spec.conf.localAs":                                Honoured,
	"spec.conf.neighborAddress":                        Honoured,
	"spec.conf.peerAs":                                 Honoured,
	"spec.conf.peerGroup":                              "GoBGP peer groups are not configured by the speakers; give each BgpPeer its own settings",
	"spec.conf.peerType":                               "GoBGP derives internal or external from the AS numbers",
	"spec.conf.removePrivateAs":                        Honoured,
	"spec.conf.routeFlapDamping":                       "GoBGP does not implement route flap damping, and it would apply to received routes, which the speakers discard",
	"spec.conf.sendCommunity":                          Honoured,
	"spec.conf.neighborInterface":                      "BGP unnumbered needs a point-to-point link (GoBGP resolves the neighbor as the one IPv6 link-local neighbor of the interface, once, when it is configured), and a rack segment holds the leaf and every node of the rack; set spec.conf.neighborAddress",
	"spec.conf.vrf":                                    "a GoBGP VRF needs a route distinguisher and route targets, which a BgpPeer does not carry, and turns the routes into VPN routes; the speakers announce plain unicast routes in the default table",
	"spec.conf.allowOwnAs":                             Honoured,
	"spec.conf.replacePeerAs":                          Honoured,
	"spec.conf.adminDown":                              Honoured,
	"spec.ebgpMultihop.enabled":                        Honoured,
	"spec.ebgpMultihop.multihopTtl":                    Honoured,
	"spec.timers.config.connectRetry":                  Honoured,
	"spec.timers.config.holdTime":                      Honoured,
	"spec.timers.config.keepaliveInterval":             Honoured,
	"spec.timers.config.minimumAdvertisementInterval":  "GoBGP v4 accepts it and does not use it",
	"spec.transport.mtuDiscovery":                      "GoBGP v4 accepts it and does not use it",
	"spec.transport.passiveMode":                       Honoured,
	"spec.transport.remoteAddress":                     Honoured,
	"spec.transport.remotePort":                        Honoured,
	"spec.transport.tcpMss":                            Honoured,
	"spec.gracefulRestart.enabled":                     Honoured,
	"spec.gracefulRestart.restartTime":                 Honoured,
	"spec.gracefulRestart.helperOnly":                  Honoured,
	"spec.gracefulRestart.deferralTime":                "the deferral time is the speakers' own, set in the BgpConf",
	"spec.gracefulRestart.notificationEnabled":         Honoured,
	"spec.gracefulRestart.longlivedEnabled":            Honoured,
	"spec.gracefulRestart.staleRoutesTime":             Honoured,
	"spec.gracefulRestart.peerRestartTime":             "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.peerRestarting":              "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.localRestarting":             "it is session state GoBGP reports, not configuration",
	"spec.gracefulRestart.mode":                        "it is session state GoBGP reports, not configuration",
	"spec.afiSafis[].config.family.afi":                Honoured,
	"spec.afiSafis[].config.family.safi":               Honoured,
	"spec.afiSafis[].config.enabled":                   Honoured,
	"spec.afiSafis[].mpGracefulRestart.config.enabled": "graceful restart covers every family of the session (spec.gracefulRestart)",
	"spec.afiSafis[].addPaths.config.receive":          "the speakers discard every route they receive",
	"spec.afiSafis[].addPaths.config.sendMax":          Honoured,
	"spec.bfd.enabled":                                 Honoured,
	"spec.bfd.detectMultiplier":                        Honoured,
	"spec.bfd.desiredMinTxIntervalMs":                  Honoured,
	"spec.bfd.requiredMinRxIntervalMs":                 Honoured,
	"spec.nodeSelector":                                Honoured,
}

// EipFields: spec fields of Eip, as BgpConfFields.
var EipFields = map[string]string{
	"spec.address":                      Honoured,
	"spec.ranges":                       Honoured,
	"spec.skipNetworkAndBroadcast":      Honoured,
	"spec.protocol":                     Honoured,
	"spec.interface":                    Honoured,
	"spec.disable":                      Honoured,
	"spec.usingKnownIPs":                "addresses are not probed before use",
	"spec.priority":                     Honoured,
	"spec.namespaces":                   Honoured,
	"spec.namespaceSelector":            Honoured,
	"spec.serviceSelector":              Honoured,
	"spec.allowAnyNamespace":            Honoured,
	"spec.bgp":                          Honoured,
	"spec.layer2.nodeSelector":          Honoured,
	"spec.layer2.preferredNodeSelector": Honoured,
	"spec.layer2.interfaces":            Honoured,
}

// FieldPaths lists the JSON paths of the leaf fields of a spec type
// (structs are walked, lists of structs get "[]", maps, label selectors
// and the Eip's spec.bgp are leaves), under prefix.
func FieldPaths(t reflect.Type, prefix string) []string {
	var out []string
	walkFields(t, prefix, func(path string, _ reflect.Type) { out = append(out, path) })
	slices.Sort(out)
	return out
}

var leafTypes = map[reflect.Type]bool{
	reflect.TypeFor[metav1.LabelSelector](): true,
	reflect.TypeFor[EipBGP]():               true,
	reflect.TypeFor[SecretKeyRef]():         true,
}

// isLeaf says whether a field of type t (pointers removed) is reported
// as a whole: not a struct, nor a list of structs, or one of leafTypes.
func isLeaf(t reflect.Type) bool {
	if leafTypes[t] {
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		return false
	case reflect.Slice:
		return deref(t.Elem()).Kind() != reflect.Struct
	}
	return true
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// jsonName is a field's JSON name ("" when it is not serialized).
func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func walkFields(t reflect.Type, prefix string, leaf func(string, reflect.Type)) {
	t = deref(t)
	switch {
	case isLeaf(t):
		leaf(prefix, t)
	case t.Kind() == reflect.Slice:
		walkFields(t.Elem(), prefix+"[]", leaf)
	default:
		for i := range t.NumField() {
			if name := jsonName(t.Field(i)); name != "" {
				walkFields(t.Field(i).Type, prefix+"."+name, leaf)
			}
		}
	}
}

// UnsupportedFields are the set fields of spec (a *BgpConfSpec,
// *BgpPeerSpec or *EipSpec) the provider does not carry out, as
// "path (why)", sorted; table is the kind's field table.
func UnsupportedFields(spec any, table map[string]string) []string {
	var out []string
	setFields(reflect.ValueOf(spec), "spec", func(path string) {
		if why := table[path]; why != Honoured {
			out = append(out, fmt.Sprintf("%s (%s)", path, why))
		}
	})
	// A value, not a field: families the speakers do not announce.
	if peer, ok := spec.(*BgpPeerSpec); ok {
		for _, af := range peer.AfiSafis {
			if af == nil || af.Config == nil || af.Config.Family == nil {
				continue
			}
			f := strings.ToLower(af.Config.Family.Afi) + "/" + strings.ToLower(af.Config.Family.Safi)
			if f != "ipv4/unicast" && f != "ipv6/unicast" {
				out = append(out, fmt.Sprintf("spec.afiSafis[].config.family %s (the speakers announce ipv4/unicast and ipv6/unicast only)", f))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// setFields calls set for each leaf path holding a non-zero value.
func setFields(v reflect.Value, prefix string, set func(string)) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	t := v.Type()
	switch {
	case isLeaf(t):
		if !v.IsZero() && (t.Kind() != reflect.Slice || v.Len() > 0) {
			set(prefix)
		}
	case t.Kind() == reflect.Slice:
		for i := range v.Len() {
			setFields(v.Index(i), prefix+"[]", set)
		}
	default:
		for i := range t.NumField() {
			if name := jsonName(t.Field(i)); name != "" {
				setFields(v.Field(i), prefix+"."+name, set)
			}
		}
	}
}
