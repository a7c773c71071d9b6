# BoxLite for Go. `make demo` runs a box; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
ROOTFS := $(CURDIR)/.cache/rootfs/busybox
TEST_IMAGES := $(CURDIR)/.cache/images

.PHONY: deps build rootfs test-images demo test unit e2e vet bench generate

deps:
	./scripts/install-deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/boxlite-agent ./cmd/boxlite-agent
	CGO_ENABLED=0 $(GO) build -o $(BIN)/boxlite ./cmd/boxlite

rootfs:
	./scripts/busybox-rootfs.sh $(ROOTFS) >/dev/null

# The main job: boot a box from the offline busybox root filesystem and run
# a command in it.
demo: deps build rootfs
	$(BIN)/boxlite run --rm --rootfs $(ROOTFS) -- sh -c 'echo "hello from a box: $$(uname -sr), $$(nproc) cpu"'

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

# OCI layouts of the e2e test images (busybox, Debian + python3); the
# debootstrap tree is cached under .cache/rootfs.
test-images:
	./scripts/build-test-images.sh $(TEST_IMAGES) >/dev/null

# e2e boots real VMs (software emulation without /dev/kvm). Without the
# test images (they need root) the registry tests skip, except in CI.
e2e: build rootfs
	@images=; \
	if GO=$(GO) ./scripts/build-test-images.sh $(TEST_IMAGES) >/dev/null; then images=$(TEST_IMAGES); \
	elif [ "$$CI" = true ]; then exit 1; \
	else echo "e2e: test images not built: the registry tests will skip" >&2; fi; \
	set -x; BOXLITE_AGENT=$(BIN)/boxlite-agent BOXLITE_TEST_ROOTFS=$(ROOTFS) BOXLITE_TEST_IMAGES=$$images \
		$(GO) test -count=1 -timeout 40m ./test/e2e/

test: deps vet unit e2e

bench: deps build rootfs test-images
	$(GO) run ./bench -agent $(BIN)/boxlite-agent -rootfs $(ROOTFS)
	GOBIN=$(BIN) $(GO) install github.com/google/go-containerregistry/cmd/crane@v0.22.1
	$(GO) run ./bench -images $(TEST_IMAGES) -crane $(BIN)/crane
	$(GO) run ./bench -clone -agent $(BIN)/boxlite-agent -rootfs $(ROOTFS)
	$(GO) run ./bench -net -net-mib 32 -agent $(BIN)/boxlite-agent -rootfs $(ROOTFS)

generate:
	$(GO) generate ./...
