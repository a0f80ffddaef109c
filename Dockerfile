# Multi-stage build of both Dynagate services (one image, two binaries).
#   docker build -t dynagate .
# No system protoc is needed: common/build.rs compiles the protos with protox.
# Every base image is pinned by tag (tests/tests/containers.rs and hadolint check it in CI).

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth-service -p data-service --bins \
 && mkdir -p /out \
 && cp target/release/auth-service target/release/data-service /out/

FROM debian:bookworm-slim
# ca-certificates follows the pinned base image's security updates rather than a version pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dynagate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home dynagate
COPY --from=build /out/ /usr/local/bin/
# Numeric, so runtimes that enforce "run as non-root" can verify it without /etc/passwd.
USER 10001:10001
# Listen on every interface inside the container; publish ports explicitly.
ENV DYNAGATE_AUTH_LISTEN_ADDR=0.0.0.0:50051 \
    DYNAGATE_DATA_LISTEN_ADDR=0.0.0.0:50052 \
    DYNAGATE_AUTH_METRICS_ADDR=0.0.0.0:9464 \
    DYNAGATE_DATA_METRICS_ADDR=0.0.0.0:9465
# gRPC, then Prometheus metrics (plain HTTP GET /metrics).
EXPOSE 50051 50052 9464 9465
# grpc.health.v1 Check against the server's own listen address. For the data-service run
# `data-service health-check` instead (docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["auth-service", "health-check"]
CMD ["auth-service"]
