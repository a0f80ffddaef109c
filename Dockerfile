# Multi-stage build of both Dynagate services (one image, two binaries).
#   docker build -t dynagate .
# No system protoc is needed: common/build.rs compiles the protos with protox.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth-service -p data-service --bins \
 && mkdir -p /out \
 && cp target/release/auth-service target/release/data-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home dynagate
COPY --from=build /out/ /usr/local/bin/
USER dynagate
# Listen on every interface inside the container; publish ports explicitly.
ENV DYNAGATE_AUTH_LISTEN_ADDR=0.0.0.0:50051 \
    DYNAGATE_DATA_LISTEN_ADDR=0.0.0.0:50052
EXPOSE 50051 50052
CMD ["auth-service"]
