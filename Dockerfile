# The ranged image: the release binary built on the host by `cargo build --release`, on
# Debian bookworm (the binary links glibc 2.36). Build it from the repository root:
#   cargo build --release && docker build -t ranged:local .
# Where no image registry is reachable, `bash docker/build-base-image.sh` first builds
# debian:bookworm-slim locally with debootstrap.
FROM debian:bookworm-slim

# curl serves the compose healthchecks (GET /api/v2/health/?ready=true over TLS).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log

# A non-root user owning the store and certificate directories; named volumes mounted there
# start with this ownership.
RUN groupadd --system --gid 10001 ranged \
 && useradd --system --uid 10001 --gid ranged --home-dir /var/lib/ranged --shell /usr/sbin/nologin ranged \
 && mkdir -p /var/lib/ranged/data /var/lib/ranged/certs /var/lib/ranged/ca \
 && chown -R ranged:ranged /var/lib/ranged

COPY target/release/ranged /usr/local/bin/ranged

USER ranged
WORKDIR /var/lib/ranged
# SQL, HTTP, and gRPC (TCP) plus gossip (UDP) on one port.
EXPOSE 26257 8080 26357 26357/udp
ENTRYPOINT ["ranged"]
CMD ["--help"]
