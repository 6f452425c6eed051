# Entente build entry points. `make build` needs Go and Node.js with npm.
GO ?= go
NPM ?= npm

.PHONY: all web build run test clean

all: build

# The join page: install the locked npm dependencies (again only when the
# lock file changes), then bundle web/src into web/dist for go:embed.
web: web/node_modules/.package-lock.json
	cd web && $(NPM) run build

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && $(NPM) ci --no-audit --no-fund
	@touch $@

build: web
	$(GO) build -o bin/entente ./cmd/entente

# ARGS passes flags, e.g. make run ARGS="--config entente.toml".
run: build
	./bin/entente $(ARGS)

# Every test, uncached. Real servers and browsers: see scripts/install-test-deps.sh.
# Then the concurrent packages under the race detector, and real clients against
# a node built with it (a race the node reports fails the test).
test: web
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -race -count=1 -timeout 15m ./media/... ./bridge/matrix/... ./federation/... ./internal/netnstest/...
	ENTENTE_E2E_RACE=1 $(GO) test -count=1 -timeout 15m -run 'TestSDK|TestMatrixCall$$|TestBrowserTwoPages|TestFederationTwoNodesSDK|TestFederationFanout|TestSealedFailures|TestSealedFirewalledClients' ./test/e2e

clean:
	rm -rf bin
	find web/dist -mindepth 1 ! -name .gitkeep -delete
