package v1alpha2

import (
	"crypto/sha256"
	"encoding/hex"

	"k8s.io/apimachinery/pkg/util/validation"
)

// RackObjectName is the LoadBalancerRack name of a rack label value: the
// value itself when it is a valid object name, otherwise "rack-" and the
// SHA-256 of the value in hex ("" and values with capitals or "_"). A
// derived name is 69 characters, longer than any label value, so it never
// equals another rack's own name.
func RackObjectName(rack string) string {
	if rack != "" && len(validation.IsDNS1123Subdomain(rack)) == 0 {
		return rack
	}
	sum := sha256.Sum256([]byte(rack))
	return "rack-" + hex.EncodeToString(sum[:])
}
