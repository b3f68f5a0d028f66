# promotion-service. `make` alone lists the targets.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
PKG     ?= ./...
# Packages whose tests exercise concurrency run under the race detector.
# ./devcluster and ./cmd/promo (child processes, the whole cluster in one
# process) took 49 s and 48 s under -race on the 2-core machine.
RACE_PKG ?= ./httpserver ./ingest/... ./ingestclient ./pebblestore ./lookup ./readnode ./standalone ./pgstore ./ingestsvc ./cache ./proxy ./hedge ./client ./devcluster ./cmd/promo
BIN     := bin/promo
LDFLAGS := -X main.version=$(VERSION)

.DEFAULT_GOAL := help
.PHONY: help build run test test-race bench loadtest benchmarks faults lint fmt-check layout-check fmt vet clean compose-check k8s-check devcluster

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/promo
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/promo

run: build ## start the standalone server on 127.0.0.1:8080 (data in ./data, imports from .)
	./$(BIN) standalone

test: lint compose-check ## gofmt, go vet, compose check, all tests, the concurrent packages again under -race, the Kubernetes check
	$(GO) test -count=1 $(PKG)
	$(GO) test -count=1 -race $(RACE_PKG)
	$(MAKE) k8s-check

test-race: ## every package under the race detector
	$(GO) test -count=1 -race $(PKG)

bench: ## Go micro-benchmarks (parse, codec, import, lookup)
	$(GO) test -run '^$$' -bench . -benchmem $(PKG)

loadtest: ## start standalone, import 2M generated rows, run vegeta load tests (reports and plots in bench/out)
	bench/loadtest.sh

benchmarks: ## run import benchmarks and load tests, regenerate BENCHMARKS.md
	bench/benchmarks.sh

# FAULTS_FLAGS=--report-only writes the report and exits 0 even when an
# expectation fails.
FAULTS_FLAGS ?=
faults: build ## fault drills against a local cluster under load (about 6 min, root for the disk drills); writes FAULTS.md
	./$(BIN) bench faults --out FAULTS.md $(FAULTS_FLAGS)

devcluster: build ## the whole cluster on this machine: proxy :8080, ingest :8081, data in ./devcluster-data
	./$(BIN) devcluster --dir ./devcluster-data

# docker-compose (Debian's package, or the compose plugin) and promtool
# (Debian's prometheus package) check the files offline; without them the
# check is skipped with a message, unless CI is set.
COMPOSE := $(shell command -v docker-compose 2>/dev/null || (docker compose version >/dev/null 2>&1 && echo "docker compose"))
compose-check: ## validate docker-compose.yml, deploy/prometheus.yml and the alert rules offline, and unit-test the alerts
	@if [ -z "$(COMPOSE)" ] || ! command -v promtool >/dev/null; then \
		msg="compose-check needs docker-compose and promtool (apt-get install --no-install-recommends docker-compose prometheus)"; \
		if [ -n "$$CI" ]; then echo "$$msg" >&2; exit 1; fi; echo "skipping: $$msg"; exit 0; fi; \
	PROMO_INGEST_TOKEN=check $(COMPOSE) -f docker-compose.yml config -q && echo "docker-compose.yml: valid" && \
	promtool check config deploy/prometheus.yml && \
	promtool check rules deploy/alerts.yml && \
	promtool test rules deploy/alerts_test.yml

# deploy/k8s/check is a module of its own, so that the Kubernetes and
# kustomize libraries stay out of the main module's go.mod; its tests render
# the kustomize base, decode every object strictly with the Kubernetes API
# types, check args, env, ports and probes against bin/promo, and run the
# base's pods as bin/promo processes on loopback (real PostgreSQL, the
# in-process broker) through an import.
k8s-check: build ## render deploy/k8s, decode it strictly, check it against bin/promo and run its pods on loopback (no cluster)
	cd deploy/k8s/check && $(GO) vet ./... && PROMO_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 ./...

lint: fmt-check vet layout-check ## gofmt check, go vet and the layout check

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The embedded server links no PostgreSQL, Kafka or Redis client, and the
# proxy no Pebble: what a server links is what it runs.
layout-check: ## standalone links no pgx, kafka-go or go-redis; the proxy no Pebble
	@bad="$$($(GO) list -deps ./standalone | grep -E 'jackc/pgx|segmentio/kafka-go|redis/go-redis')"; \
	if [ -n "$$bad" ]; then echo "standalone links cluster clients:"; echo "$$bad" | head; exit 1; fi; \
	bad="$$($(GO) list -deps ./proxy | grep -E 'cockroachdb/pebble')"; \
	if [ -n "$$bad" ]; then echo "proxy links Pebble:"; echo "$$bad" | head; exit 1; fi; \
	echo "layout: standalone and proxy link only what they run"

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet $(PKG)

clean: ## remove bin/, ./data and ./devcluster-data
	rm -rf bin data devcluster-data
