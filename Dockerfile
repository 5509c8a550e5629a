# The routemeter image: one binary for the operator and the proxy
# (`routemeter operator | proxy | crd | render`), for users with Docker and a registry:
#
#   docker build -t registry.example.com/routemeter/routemeter:0.1.0 .
#   docker push registry.example.com/routemeter/routemeter:0.1.0
#
# The final image has the layout of the one `make image` writes without Docker
# (tests/image/build.sh): FROM scratch, the binary at /routemeter, exactly the shared
# libraries `ldd` lists for it (libc, libm, libgcc_s; no OpenSSL) and the ELF loader at
# the paths ldd gives, /etc/passwd and /etc/group with the nonroot user 65532,
# /etc/nsswitch.conf (hosts: files dns), an empty /tmp (1777), user 65532:65532.
# No shell, no package manager.

FROM rust:1-bookworm AS build
# cmake builds zlib-ng for pingora.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin routemeter

# The runtime root: the binary, the libraries and loader it needs (symlinks followed, so
# each lands as a regular file where the loader looks for it), the accounts, /tmp, and
# nsswitch.conf: glibc without it asks DNS first and reads /etc/hosts only when DNS is
# unreachable, so hostAliases and a `localhost` upstream would not resolve.
RUN set -eu; \
    mkdir -p /rootfs/etc /rootfs/tmp; \
    cp target/release/routemeter /rootfs/routemeter; \
    ldd /rootfs/routemeter > /tmp/ldd.txt; \
    while read -r line; do \
      case "$line" in \
        *"not found"*) echo "missing library: $line" >&2; exit 1 ;; \
        *"=> /"*) lib="${line#*=> }" ;; \
        /*) lib="$line" ;; \
        *) continue ;; \
      esac; \
      lib="${lib%% (*}"; \
      mkdir -p "/rootfs$(dirname "$lib")"; \
      cp -L "$lib" "/rootfs$lib"; \
    done < /tmp/ldd.txt; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    chmod 1777 /rootfs/tmp; \
    find /rootfs -exec ls -ld {} +

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# No transparent huge pages for the operator and the proxies, even on nodes that give them
# to every process (`always`): mimalloc then disables them for the process (prctl), as a
# 2 MiB page stays resident while any byte of it is in use (README, "Operator").
ENV MIMALLOC_ALLOW_THP=0
WORKDIR /
# The nonroot user the chart and the operator's proxy pods run as (runAsNonRoot).
USER 65532:65532
ENTRYPOINT ["/routemeter"]
