# The routemeter image: one binary for the operator and the proxy
# (`routemeter operator | proxy | crd | render`).
#
#   docker build -t routemeter/routemeter:0.1.0 .
#
# The binary links only the C runtime every Debian image has (libc, libm, libgcc_s:
# `ldd target/release/routemeter`; no OpenSSL), so the runtime stage is Debian slim of the
# builder's release (the same glibc), with nothing added.

FROM rust:1-bookworm AS build
# cmake builds zlib-ng for pingora.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin routemeter \
 && cp target/release/routemeter /routemeter

FROM debian:bookworm-slim
COPY --from=build /routemeter /routemeter
# The nonroot user the chart and the operator's proxy pods run as (runAsNonRoot).
USER 65532:65532
ENTRYPOINT ["/routemeter"]
