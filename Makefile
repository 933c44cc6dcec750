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

KUBE_VERSION        := v1.36.3
ETCD_VERSION        := v3.6.16
CONTROLLER_GEN_VER  := v0.21.0
CONTROLLER_GEN      := $(CACHE_BIN)/controller-gen
KUBE_STAMP          := $(CACHE_BIN)/.kube-$(KUBE_VERSION)
ETCD_STAMP          := $(CACHE_BIN)/.etcd-$(ETCD_VERSION)
CG_STAMP            := $(CACHE_BIN)/.controller-gen-$(CONTROLLER_GEN_VER)

# Debian packages the test layers need: FRR routers for the BGP lab,
# arping/ndisc6 clients for layer 2, socat/curl for client traffic.
APT_PACKAGES := iproute2 git ca-certificates frr iputils-arping ndisc6 socat curl

TEST_TIMEOUT ?= 45m

.PHONY: all build generate manifests verify tools deps test test-unit test-fuzz test-conformance bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	go build -o $(BIN)/openelb-cloud-controller-manager ./ccm
	go build -o $(BIN)/openelb-speaker ./nodeagent

## Code generation -----------------------------------------------------------

$(CG_STAMP):
	@mkdir -p $(CACHE_BIN)
	cd /tmp && GOBIN=$(CACHE_BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VER)
	@touch $@

generate: $(CG_STAMP)
	$(CONTROLLER_GEN) object paths=./provider/api/...
	$(MAKE) manifests

manifests: $(CG_STAMP)
	$(CONTROLLER_GEN) crd paths=./provider/api/... output:crd:artifacts:config=deploy/crds

# verify fails when generated files or go.mod/go.sum are stale.
verify: generate
	go mod tidy
	cd conformance/tools/kube && go mod tidy
	cd conformance/tools/etcd && go mod tidy
	@git diff --exit-code -- provider/api deploy/crds go.mod go.sum conformance/tools \
		|| { echo "generated files or go.mod are stale: run 'make generate' and 'go mod tidy' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- provider/api deploy/crds)" \
		|| { echo "untracked generated files: commit them"; git status --porcelain -- provider/api deploy/crds; exit 1; }
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

tools: $(KUBE_STAMP) $(ETCD_STAMP) $(CG_STAMP)

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

test: deps tools build verify test-unit test-fuzz test-conformance

test-unit:
	go test -count=1 -race ./provider/... ./nodeagent/agent/...
	@# GoBGP's StartBgp writes package-level state that every GoBGP server in
	@# a process reads; these tests run two servers, so the race detector
	@# would flag GoBGP itself. The speaker runs one server per process.
	go test -count=1 ./nodeagent/bgp/...

# The fuzz targets' seed corpora run as ordinary tests in test-unit; this
# fuzzes each target briefly on top.
test-fuzz:
	go test -run='^$$' -fuzz=FuzzParseRange -fuzztime=20s ./provider/ipam/

test-conformance: build
	go test -count=1 -timeout $(TEST_TIMEOUT) ./conformance/...

bench: deps tools build
	go test -run='^$$' -bench=. -benchtime=2000x ./provider/ipam/
	go run ./conformance/cmd/bench

demo: deps tools build
	go run ./conformance/cmd/demo

clean:
	rm -rf $(BIN)
