package ipam_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unicode/utf8"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// eipCRD is the generated Eip CRD the API server enforces.
const eipCRD = "../../deploy/crds/network.kubesphere.io_eips.yaml"

// addressMaxLength is spec.address's maxLength in the CRD: longer values
// are refused before any CEL rule runs.
const addressMaxLength = 100

// addressRules evaluates the x-kubernetes-validations of the generated Eip
// CRD with the API server's own CEL validator and environment, and tells
// whether an Eip whose spec.address is s passes those of spec.address.
func addressRules(t testing.TB) func(s string) (bool, field.ErrorList) {
	t.Helper()
	raw, err := os.ReadFile(filepath.FromSlash(eipCRD))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
		t.Fatalf("%s: %v", eipCRD, err)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Schema == nil {
		t.Fatalf("%s: want one version with a schema", eipCRD)
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := schema.NewStructural(&internal)
	if err != nil {
		t.Fatal(err)
	}
	v := cel.NewValidator(s, true, celconfig.PerCallLimit)
	if v == nil {
		t.Fatalf("%s has no CEL rules", eipCRD)
	}
	addr := field.NewPath("spec", "address").String()
	return func(address string) (bool, field.ErrorList) {
		obj := map[string]any{
			"apiVersion": "network.kubesphere.io/v1alpha2", "kind": "Eip",
			"metadata": map[string]any{"name": "pool"},
			"spec":     map[string]any{"address": address},
		}
		errs, _ := v.Validate(context.Background(), nil, s, obj, nil, celconfig.RuntimeCELCostBudget)
		var mine field.ErrorList
		for _, e := range errs {
			if e.Field == addr {
				mine = append(mine, e)
			} else {
				t.Fatalf("Eip with address %q: unexpected error %v", address, e)
			}
		}
		return len(mine) == 0, mine
	}
}

// FuzzEipAddressRule checks that the API server (the CRD's CEL rules on
// spec.address) and the allocator (ParseRange) accept the same addresses,
// so an Eip is never stored only to be refused by the CCM, nor refused
// although the CCM could serve it. Values longer than the schema's
// maxLength and invalid UTF-8 (which JSON decoding replaces) never reach
// the rules and are not compared.
func FuzzEipAddressRule(f *testing.F) {
	for _, s := range []string{
		"192.168.0.10", "192.168.0.0/24", "192.168.0.91-192.168.0.100", " 10.0.0.1 ", "10.0.0.1 - 10.0.0.9",
		"2001:db8::1", "2001:db8::/120", "2001:db8::10-2001:db8::1", "10.0.0.9-10.0.0.1", "10.0.0.1-10.0.0.1",
		"fe80::1%eth0", "fe80::1%eth0/64", "fe80::1%eth0-fe80::2", "fe80::1-fe80::2%eth-0",
		"::ffff:10.0.0.1", "::ffff:10.0.0.0/120", "::/0", "::/80", "::/81", "::1-::1:0:0:0", "::ffff:ffff:ffff:ffff-::1:0:0:0",
		"10.0.0.1-2001:db8::1", "10.0.0.0/33", "10.0.0.0/024", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0 /8",
		"10.0.0.1-", "-10.0.0.1", "10.0.0.1--10.0.0.2", "10.0.0.0/24-10.0.0.9", "", " ", "010.0.0.1",
		"0.0.0.0/0", "255.255.255.255", "128.0.0.0-127.255.255.255", "8000::-7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"\u00a010.0.0.1\u0085", "10.0.0.1\u200b",
	} {
		f.Add(s)
	}
	rules := addressRules(f)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > addressMaxLength || !utf8.ValidString(s) {
			return // refused by the schema (maxLength) or by JSON decoding before any rule
		}
		_, perr := ipam.ParseRange(s)
		ok, errs := rules(s)
		if ok == (perr == nil) {
			return
		}
		if ok {
			t.Fatalf("the CRD accepts spec.address %q, ParseRange refuses it: %v", s, perr)
		}
		t.Fatalf("ParseRange accepts %q, the CRD refuses it: %v", s, errs)
	})
}

// FuzzEipAddressForms is FuzzEipAddressRule for well-formed candidates,
// which random strings rarely are: two addresses built from the input
// (IPv4, IPv6, or IPv6 near the IPv4-mapped block), written as a range, a
// CIDR or a single address, with optional spaces.
func FuzzEipAddressForms(f *testing.F) {
	f.Add([]byte{10, 0, 0, 9}, []byte{10, 0, 0, 1}, uint8(0), uint8(24), uint8(0))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x10}, []byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x01}, uint8(1), uint8(120), uint8(1))
	f.Add([]byte{9: 0xff, 10: 0xfe}, []byte{9: 0x01}, uint8(2), uint8(79), uint8(2))
	f.Add([]byte{10: 0xff, 11: 0xfe}, []byte{9: 0x01}, uint8(2), uint8(95), uint8(3))
	rules := addressRules(f)
	f.Fuzz(func(t *testing.T, a, b []byte, family, bits, form uint8) {
		first, last := fuzzAddr(a, family), fuzzAddr(b, family)
		pad := []string{"", " ", "\t", " \n"}[(form>>2)%4]
		var s string
		switch form % 3 {
		case 0:
			s = pad + first.String() + pad + "-" + pad + last.String() + pad
		case 1:
			s = pad + first.String() + pad + "/" + pad + strconv.Itoa(int(bits)) + pad
		default:
			s = pad + first.String() + pad
		}
		if len(s) > addressMaxLength {
			return
		}
		_, perr := ipam.ParseRange(s)
		if ok, errs := rules(s); ok != (perr == nil) {
			t.Fatalf("spec.address %q: the CRD says %v (%v), ParseRange says %v", s, ok, errs, perr)
		}
	})
}

// fuzzAddr builds an address of the family chosen by family: IPv4, IPv6,
// or IPv6 inside ::/80 (the IPv4-mapped block's neighbourhood).
func fuzzAddr(b []byte, family uint8) netip.Addr {
	var a [16]byte
	copy(a[:], b)
	switch family % 3 {
	case 0:
		return netip.AddrFrom4([4]byte(a[:4]))
	case 1:
		return netip.AddrFrom16(a)
	default:
		clear(a[:10])
		return netip.AddrFrom16(a)
	}
}
