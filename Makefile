# Interfaces others rely on: test, demo, bench, cluster-up, cluster-down.
SHELL := /bin/bash
CARGO ?= cargo
export KUBECONFIG_TEST := $(CURDIR)/target/cluster/kubeconfig

.PHONY: all build test unit-test lint fmt generate demo bench cluster-up cluster-down tools

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

## Unit tests only: no cluster, no network beyond loopback.
unit-test:
	$(CARGO) test --lib --test generated

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate crds/ from the Rust types.
generate: build
	./target/debug/routemeter crd > crds/routemeter.io_monitoredservices.yaml

## The local demo: control plane, operator, proxy, traffic, metrics.
demo: tools cluster-up build
	bash tests/demo/demo.sh

## Benchmark: direct vs routemeter vs nginx vs haproxy, one table.
bench:
	bash bench/run.sh

cluster-up:
	bash tests/cluster/up.sh

cluster-down:
	bash tests/cluster/down.sh
