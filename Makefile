# Interfaces others rely on: test, demo, bench, cluster-up, cluster-down.
SHELL := /bin/bash
CARGO ?= cargo
export KUBECONFIG_TEST := $(CURDIR)/target/cluster/kubeconfig

.PHONY: all build test unit-test lint fmt generate demo bench cluster-up cluster-down tools chart-test image

all: build

build:
	$(CARGO) build --bin routemeter

## Install the tools the tests use (Debian packages; Go-built tools are built on demand).
tools:
	bash tests/tools.sh

## The whole test suite: unit, proxy and operator e2e tests on the real control plane,
## and promtool on the rendered rules.
test: tools cluster-up
	$(CARGO) test --all-targets -- --test-threads=4
	bash tests/promtool.sh
	bash tests/chart.sh
	bash tests/kube-score.sh

## Unit tests only: no cluster, no network beyond loopback.
unit-test:
	$(CARGO) test --lib --test generated

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

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

## The local demo: control plane, operator, proxy, traffic, metrics.
demo: tools cluster-up build
	bash tests/demo/demo.sh

## Benchmark: direct vs routemeter vs nginx vs haproxy, one table.
bench:
	bash bench/run.sh

## The images as OCI archives in target/images (routemeter from the release build, the
## sample API, the pause image; no Docker), loaded into the node's containerd when the
## node is up (`make cluster-up`). See tests/image/README.md.
image:
	$(CARGO) build --release --bin routemeter
	bash tests/image/build.sh --load-if-up

cluster-up:
	bash tests/cluster/up.sh

cluster-down:
	bash tests/cluster/down.sh
