# promotion-service. `make` alone lists the targets.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
PKG     ?= ./...
# Packages whose tests exercise concurrency run under the race detector.
RACE_PKG ?= ./api ./ingest ./store ./readnode ./standalone ./pgstore ./ingestsvc ./cache
BIN     := bin/promo
LDFLAGS := -X main.version=$(VERSION)

.DEFAULT_GOAL := help
.PHONY: help build run test test-race bench loadtest benchmarks lint fmt-check fmt vet clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/promo
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/promo

run: build ## start the standalone server on 127.0.0.1:8080 (data in ./data, imports from .)
	./$(BIN) standalone

test: lint ## gofmt, go vet, all tests, and the concurrent packages again under -race
	$(GO) test -count=1 $(PKG)
	$(GO) test -count=1 -race $(RACE_PKG)

test-race: ## every package under the race detector
	$(GO) test -count=1 -race $(PKG)

bench: ## Go micro-benchmarks (parse, codec, import, lookup)
	$(GO) test -run '^$$' -bench . -benchmem $(PKG)

loadtest: ## start standalone, import 2M generated rows, run vegeta load tests (reports and plots in bench/out)
	bench/loadtest.sh

benchmarks: ## run import benchmarks and load tests, regenerate BENCHMARKS.md
	bench/benchmarks.sh

lint: fmt-check vet ## gofmt check and go vet

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet $(PKG)

clean: ## remove bin/ and ./data
	rm -rf bin data
