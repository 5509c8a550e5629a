# Interfaces others rely on: test, demo, bench, cluster-up, cluster-down.
SHELL := /bin/bash
CARGO ?= cargo
export KUBECONFIG_TEST := $(CURDIR)/target/cluster/kubeconfig

.PHONY: all build test unit-test lint deny shellcheck fmt generate demo bench bench-instructions bench-baseline bench-operator cluster-up cluster-down tools chart-test image monitoring monitoring-images

all: build

build:
	$(CARGO) build --bin routemeter

## Install the tools the tests use (Debian packages; Go-built tools are built on demand).
tools:
	bash tests/tools.sh

## The whole test suite on the real cluster with its node: unit and proxy tests, the
## operator against the API server, the rules on Prometheus 2 and 3, then routemeter in
## pods (the chart's operator, the proxies, the sample app, the Prometheus Operator with a
## Prometheus 3; tests/pods.rs, apart since the chart's operator watches every
## namespace), promtool 2 and 3 on the rendered rules, the chart, kube-score.
test: tools cluster-up image monitoring-images
	bash tests/e2e-reset.sh
	$(CARGO) test --all-targets -- --test-threads=4 --skip in_pods::
	$(CARGO) test --test pods -- --test-threads=3 in_pods::; status=$$?; bash tests/e2e-reset.sh; exit $$status
	bash tests/promtool.sh
	bash tests/chart.sh
	bash tests/kube-score.sh

## Unit tests only: no cluster, no network beyond loopback.
unit-test:
	$(CARGO) test --lib --test generated

lint: deny shellcheck
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## The shell scripts, warnings and errors, following what each sources.
shellcheck:
	shellcheck -x -P SCRIPTDIR -S warning $$(git ls-files '*.sh' .ci/run)

## Licences, duplicate crates and sources of every dependency (cargo-deny, deny.toml).
deny:
	bash tests/deny.sh

fmt:
	$(CARGO) fmt --all

## Regenerate crds/, the chart's CRDs and overall dashboard from the Rust code.
generate: build
	./target/debug/routemeter crd > crds/routemeter.io_monitoredservices.yaml
	ROUTEMETER_UPDATE_GENERATED=1 $(CARGO) test --test generated
	bash tests/chart.sh --update

## The Helm chart and manifests/install.yaml: lint, render, schema, drift, and the operator
## run as the chart's ServiceAccount on the test control plane.
chart-test: tools cluster-up build
	bash tests/chart.sh

## The demo, as a user runs it: the cluster with its node, the images, helm install, the
## sample app, the trips-api MonitoredService, a minute of Locust traffic, the figures.
demo: tools cluster-up image monitoring-images
	bash tests/demo/demo.sh

## Benchmark: routemeter (1 and 2 workers) against direct, nginx, haproxy, bare pingora and
## Caddy with metrics, pinned, interleaved rounds, medians, one table (bench/README.md).
bench:
	bash bench/run.sh

## CI's regression check: instructions per request of the proxy (callgrind, release build)
## against bench/instructions-baseline.json; fails when they grew by more than 10 %.
bench-instructions:
	bash bench/instructions.sh --check

## Re-record that baseline: make bench-baseline REASON='what changed the figure, and why
## it is worth it'. Commit it with the change that moved the figure, saying why.
bench-baseline:
	bash bench/instructions.sh --update "$(REASON)"

## The operator at scale: 1,000 MonitoredServices created at once against the chart's
## operator in its pod; time to converge, RSS, API requests per object at rest.
bench-operator: tools cluster-up image
	bash bench/operator-scale.sh

## The images as OCI archives in target/images (routemeter from the release build, the
## sample API, the pause image; no Docker), loaded into the node's containerd when the
## node is up (`make cluster-up`). See tests/image/README.md.
image:
	$(CARGO) build --release --bin routemeter
	bash tests/image/build.sh --load-if-up

## Prometheus 3 (prometheus, promtool) and the Prometheus Operator (operator,
## prometheus-config-reloader), built from their pinned Go modules into the cache.
monitoring:
	bash tests/cluster/build-monitoring.sh >/dev/null

## Their images (tests/image/README.md), loaded into the node when it is up.
monitoring-images: monitoring
	bash tests/image/build.sh monitoring --load-if-up

cluster-up:
	bash tests/cluster/up.sh

cluster-down:
	bash tests/cluster/down.sh
