package plugin

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    options
		wantErr string
	}{
		{args: []string{"status"}, want: options{command: "status"}},
		{args: []string{"status", "nginx", "-n", "default"}, want: options{command: "status", service: "nginx", namespace: "default"}},
		{args: []string{"-n", "default", "status", "nginx"}, want: options{command: "status", service: "nginx", namespace: "default"}},
		{args: []string{"status", "--namespace=shop", "--kubeconfig", "/k", "--context", "lab", "cart"},
			want: options{command: "status", service: "cart", namespace: "shop", kubeconfig: "/k", context: "lab"}},
		{args: []string{"status", "-A"}, want: options{command: "status", allNamespaces: true}},
		{args: []string{"pools", "--request-timeout=5s", "--user", "u", "--cluster", "c"}, want: options{command: "pools", timeout: 5 * time.Second, user: "u", cluster: "c"}},
		{args: []string{"status", "--", "-odd-name"}, want: options{command: "status", service: "-odd-name"}},
		{args: []string{"help"}, want: options{command: "help", help: true}},
		{args: []string{"-h"}, want: options{help: true}},
		{args: []string{"status", "--help"}, want: options{command: "", help: true}},
		{args: nil, wantErr: "no command given"},
		{args: []string{"statuz"}, wantErr: `unknown command "statuz"`},
		{args: []string{"status", "a", "b"}, wantErr: "at most one Service"},
		{args: []string{"status", "a", "-A"}, wantErr: "exclude each other"},
		{args: []string{"pools", "x"}, wantErr: "pools takes no argument"},
		{args: []string{"status", "--bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{args: []string{"status", "-n"}, wantErr: "flag needs an argument: -n"},
		{args: []string{"status", "--openelb-namespace", "lb"}, want: options{command: "status", openelbNamespace: "lb"}},
		{args: []string{"pools", "--request-timeout=0s"}, wantErr: "must be positive"},
		{args: []string{"status", "--openelb-namespace="}, wantErr: "--openelb-namespace must not be empty"},
	} {
		got, err := parseArgs(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseArgs(%q): error %v, want one containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseArgs(%q): %v", tc.args, err)
			continue
		}
		if tc.want.timeout == 0 {
			tc.want.timeout = 30 * time.Second
		}
		if tc.want.openelbNamespace == "" {
			tc.want.openelbNamespace = DefaultOpenELBNamespace
		}
		if got != tc.want {
			t.Errorf("parseArgs(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestServed(t *testing.T) {
	svc := func(typ corev1.ServiceType, class *string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}, Spec: corev1.ServiceSpec{Type: typ, LoadBalancerClass: class}}
	}
	if err := served(svc(corev1.ServiceTypeLoadBalancer, nil)); err != nil {
		t.Errorf("class-less LoadBalancer: %v", err)
	}
	if err := served(svc(corev1.ServiceTypeLoadBalancer, ptr.To(LoadBalancerClass))); err != nil {
		t.Errorf("openelb's class: %v", err)
	}
	err := served(svc(corev1.ServiceTypeClusterIP, nil))
	if !errors.Is(err, ErrNotLoadBalancer) || err.Error() != "Service ns/s is of type ClusterIP, not a LoadBalancer: openelb serves only Services of type LoadBalancer" {
		t.Errorf("ClusterIP: %v", err)
	}
	if err := served(svc(corev1.ServiceTypeLoadBalancer, ptr.To("example.com/lb"))); !errors.Is(err, ErrOtherClass) || !strings.Contains(err.Error(), "example.com/lb") {
		t.Errorf("another class: %v", err)
	}
}

func TestMainUsage(t *testing.T) {
	var out, errOut strings.Builder
	if code := Main([]string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "kubectl openelb status [SERVICE]") {
		t.Errorf("--help: code %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := Main([]string{"frobnicate"}, &out, &errOut); code != 2 || !strings.HasPrefix(errOut.String(), `error: unknown command "frobnicate"`) {
		t.Errorf("bad command: code %d, stderr %q", code, errOut.String())
	}
}
