# The two commands a newcomer needs are `make demo` and `make test`; every
# other target is a step of those. Tools are built from Go modules into
# .cache/bin (git-ignored) and reused while their version stamp matches.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export GOFLAGS := -buildvcs=false

ROOT      := $(abspath .)
BIN       := $(ROOT)/bin
CACHE_BIN := $(ROOT)/.cache/bin
export OPENELB_BIN_DIR := $(CACHE_BIN)

KUBE_VERSION        := v1.37.2
ETCD_VERSION        := v3.6.16
CONTROLLER_GEN_VER  := v0.23.0
CONTROLLER_GEN      := $(CACHE_BIN)/controller-gen
KUBE_STAMP          := $(CACHE_BIN)/.kube-$(KUBE_VERSION)
ETCD_STAMP          := $(CACHE_BIN)/.etcd-$(ETCD_VERSION)
CG_STAMP            := $(CACHE_BIN)/.controller-gen-$(CONTROLLER_GEN_VER)
# helm renders charts/openelb in the conformance tests; built from its Go
# module (wrapper conformance/tools/helm) with the version and the default
# Kubernetes version its own release build would stamp in.
HELM_VERSION        := v3.22.0
HELM_STAMP          := $(CACHE_BIN)/.helm-$(HELM_VERSION)
HELM_LDFLAGS        := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37
# promtool checks and unit-tests the chart's alerting rules
# (charts/openelb/files/alerts.yaml, TestAlertRules); built from
# Prometheus's Go module (wrapper conformance/tools/promtool), whose v3
# releases are tagged v0.3xx.y for Go. Prometheus's own build tag
# remove_all_sd leaves out the service-discovery plugins (AWS, Azure,
# GCE, Kubernetes...) that rule tests never use: it halves the modules
# downloaded and makes the cold build about 2.5 times faster.
PROMETHEUS_VERSION  := v0.316.0
PROMTOOL_STAMP      := $(CACHE_BIN)/.promtool-$(PROMETHEUS_VERSION)

# The real-node lab (conformance/kubenode): containerd, its shim, ctr and
# runc, the CNI plugins (module conformance/tools/node), and kubelet,
# kube-proxy and kube-scheduler at KUBE_VERSION (module conformance/tools/kube),
# in .cache/bin/node. runc needs cgo and libseccomp (Debian's runc 1.1.5
# cannot start a container on this kernel: "can't get final child's PID").
CONTAINERD_VERSION  := v2.4.2
RUNC_VERSION        := v1.5.3
CNI_PLUGINS_VERSION := v1.10.0
NODE_BIN            := $(CACHE_BIN)/node
NODE_STAMP          := $(NODE_BIN)/.node-$(CONTAINERD_VERSION)-$(RUNC_VERSION)-$(CNI_PLUGINS_VERSION)
KUBE_NODE_STAMP     := $(NODE_BIN)/.kube-$(KUBE_VERSION)
CONTAINERD_TAGS     := no_btrfs no_devmapper no_zfs urfave_cli_no_docs

# Images: `make image` writes bin/images/<name>.tar (docker-archive; `docker
# load -i` / `podman load -i`). The tag matches deploy/kustomization.yaml and
# the chart's appVersion (a conformance test checks they agree).
IMAGE_TAG  ?= v0.1.0
IMAGE_REPO ?= openelb/

# Debian packages the test layers need: FRR and BIRD routers for the BGP lab,
# arping/ndisc6 clients for layer 2, socat/curl for client traffic, nft for
# kube-proxy's nftables mode and libseccomp to build runc for the real nodes.
APT_PACKAGES := iproute2 git ca-certificates frr bird2 iputils-arping ndisc6 socat curl \
	nftables libseccomp-dev pkg-config

TEST_TIMEOUT ?= 45m

.PHONY: all build image image-lab node-tools chart-crds generate manifests verify tools deps test test-unit test-fuzz fuzz test-conformance bench demo demo-cluster clean

all: build

# Static binaries (no cgo), the same ones the images carry, so the tests run
# what ships and `make image` reuses the build cache.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 go build -o $(BIN)/openelb-cloud-controller-manager ./ccm
	CGO_ENABLED=0 go build -o $(BIN)/openelb-speaker ./nodeagent
	CGO_ENABLED=0 go build -o $(BIN)/kubectl-openelb ./kubectl-openelb

# No Docker needed: hack/ociimage compiles each binary statically and layers
# it onto an empty base (go-containerregistry).
image:
	go run ./hack/ociimage -out $(BIN)/images -tag $(IMAGE_TAG) -repository-prefix $(IMAGE_REPO)

# The real-node lab's own images (a pod sandbox and a test backend) in
# bin/lab-images.
image-lab:
	go run ./hack/ociimage -set lab -out $(BIN)/lab-images -tag $(IMAGE_TAG) -repository-prefix $(IMAGE_REPO)

## Code generation -----------------------------------------------------------

$(CG_STAMP):
	@mkdir -p $(CACHE_BIN)
	cd /tmp && GOBIN=$(CACHE_BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VER)
	@touch $@

generate: $(CG_STAMP)
	$(CONTROLLER_GEN) object paths=./api/...
	$(MAKE) manifests

manifests: $(CG_STAMP)
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=deploy/crds
	$(MAKE) chart-crds

# The chart ships the generated CRDs verbatim (a conformance test fails when
# they differ).
chart-crds:
	rm -f charts/openelb/crds/*.yaml
	cp deploy/crds/*.yaml charts/openelb/crds/

# verify fails when generated files or go.mod/go.sum are stale.
verify: generate
	go mod tidy
	cd conformance/tools/kube && go mod tidy
	cd conformance/tools/etcd && go mod tidy
	cd conformance/tools/helm && go mod tidy
	cd conformance/tools/node && go mod tidy
	cd conformance/tools/promtool && go mod tidy
	@git diff --exit-code -- api deploy/crds charts/openelb/crds go.mod go.sum conformance/tools \
		|| { echo "generated files or go.mod are stale: run 'make generate' and 'go mod tidy' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api deploy/crds)" \
		|| { echo "untracked generated files: commit them"; git status --porcelain -- api deploy/crds; exit 1; }
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; test -z "$$unformatted" \
		|| { echo "not gofmt-ed: $$unformatted"; exit 1; }
	go vet ./...

## Tools: the real control plane --------------------------------------------

$(KUBE_STAMP):
	@mkdir -p $(CACHE_BIN)
	@echo ">> building kube-apiserver, kube-controller-manager, kubectl $(KUBE_VERSION) (about 10 minutes on 2 cores, once)"
	cd conformance/tools/kube && go build -o $(CACHE_BIN)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
	@touch $@

$(ETCD_STAMP):
	@mkdir -p $(CACHE_BIN)
	@echo ">> building etcd $(ETCD_VERSION) (about a minute, once)"
	cd conformance/tools/etcd && go build -o $(CACHE_BIN)/etcd go.etcd.io/etcd/server/v3
	@touch $@

$(HELM_STAMP):
	@mkdir -p $(CACHE_BIN)
	@echo ">> building helm $(HELM_VERSION) (about 3 minutes, once)"
	cd conformance/tools/helm && go build -ldflags '$(HELM_LDFLAGS)' -o $(CACHE_BIN)/helm helm.sh/helm/v3/cmd/helm
	@touch $@

$(PROMTOOL_STAMP):
	@mkdir -p $(CACHE_BIN)
	@echo ">> building promtool $(PROMETHEUS_VERSION) (about 5 minutes on 2 cores, once)"
	cd conformance/tools/promtool && go build -tags remove_all_sd -o $(CACHE_BIN)/promtool github.com/prometheus/prometheus/cmd/promtool
	@touch $@

$(NODE_STAMP): deps
	@mkdir -p $(NODE_BIN)/cni
	@echo ">> building containerd $(CONTAINERD_VERSION), runc $(RUNC_VERSION), CNI plugins $(CNI_PLUGINS_VERSION) (about 3 minutes, once)"
	cd conformance/tools/node && CGO_ENABLED=0 go build -tags '$(CONTAINERD_TAGS)' -o $(NODE_BIN)/ \
		github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr
	cd conformance/tools/node && CGO_ENABLED=0 go build -tags '$(CONTAINERD_TAGS) no_grpc' -o $(NODE_BIN)/ \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
	cd conformance/tools/node && CGO_ENABLED=1 go build -tags seccomp -o $(NODE_BIN)/runc github.com/opencontainers/runc
	cd conformance/tools/node && CGO_ENABLED=0 go build -o $(NODE_BIN)/cni/ \
		github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/main/loopback \
		github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/meta/portmap
	@touch $@

$(KUBE_NODE_STAMP):
	@mkdir -p $(NODE_BIN)
	@echo ">> building kubelet, kube-proxy, kube-scheduler $(KUBE_VERSION) (about 5 minutes on 2 cores, once)"
	cd conformance/tools/kube && go build -o $(NODE_BIN)/ \
		k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler
	@touch $@

node-tools: $(NODE_STAMP) $(KUBE_NODE_STAMP)

tools: $(KUBE_STAMP) $(ETCD_STAMP) $(CG_STAMP) $(HELM_STAMP) $(PROMTOOL_STAMP)

# deps installs the Debian packages the tests use, only when one is missing
# (apt-get update is slow and needs the network).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo ">> installing$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing"; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## Tests ---------------------------------------------------------------------

test: deps tools node-tools build verify test-unit test-fuzz test-conformance

test-unit:
	go test -count=1 -race ./provider/... ./nodeagent/ ./nodeagent/agent/... ./nodeagent/election/... ./nodeagent/layer2/... ./nodeagent/spread/... ./kubectl-openelb/...
	@# GoBGP's StartBgp writes package-level state that every GoBGP server in
	@# a process reads; these tests run two servers, so the race detector
	@# would flag GoBGP itself. The speaker runs one server per process.
	go test -count=1 ./nodeagent/bgp/...

# Fuzz targets, as package:target:executions. Their seed corpora run as
# ordinary tests in test-unit; test-fuzz fuzzes each for its execution
# count (a couple of minutes in all: a smoke run; make fuzz is the search), fuzz for FUZZTIME
# each.
FUZZ_TARGETS := \
	./provider/ipam:FuzzParseRange:200000 \
	./provider/ipam:FuzzAllocatorModel:10000 \
	./provider/ipam:FuzzEipAddressRule:5000 \
	./provider/ipam:FuzzEipAddressForms:2000 \
	./provider/cloud:FuzzBuildRequest:5000 \
	./nodeagent/bgp:FuzzBgpConfig:500 \
	./nodeagent/layer2:FuzzPackets:50000
FUZZTIME ?= 60s

test-fuzz:
	@# An execution count, not a duration: a duration ends in a deadline
	@# that a busy machine can turn into a spurious "context deadline
	@# exceeded" failure of the fuzzer itself.
	@for t in $(FUZZ_TARGETS); do \
		IFS=: read -r pkg name n <<< "$$t"; \
		echo "go test -run='^$$' -fuzz='^$$name\$$' -fuzztime=$${n}x $$pkg"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime="$${n}x" "$$pkg"; \
	done

# fuzz runs every target longer (FUZZTIME=10m make fuzz); a failing input
# is saved under the package's testdata/fuzz/<target>/ and then runs with
# the seeds in test-unit: commit it with the fix.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		IFS=: read -r pkg name n <<< "$$t"; \
		echo "go test -run='^$$' -fuzz='^$$name\$$' -fuzztime=$(FUZZTIME) $$pkg"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime="$(FUZZTIME)" "$$pkg"; \
	done

test-conformance: build
	go test -count=1 -timeout $(TEST_TIMEOUT) ./conformance/...

bench: deps tools build
	go test -run='^$$' -bench=. -benchtime=2000x ./provider/ipam/
	go run ./conformance/cmd/bench
	@# 1,000 nodes in 20 racks, 10,000 Services: node flips, speaker start,
	@# memory and writes at rest (about 15 minutes).
	go run ./conformance/cmd/bench -suites scale
	@# The CCM, kube-apiserver and etcd restarted with 1,000 and 10,000
	@# Services: recovery times (about 10 minutes, most of it creating).
	go run ./conformance/cmd/bench -suites faults

demo: deps tools build
	go run ./conformance/cmd/demo

# The same guide on real nodes: containerd, kubelet and kube-proxy in each
# node's namespace, the provider as the pods of deploy/.
demo-cluster: deps tools node-tools build
	go run ./conformance/cmd/demo -cluster

clean:
	rm -rf $(BIN)
