# A small image of stratus: build with the Rust toolchain, run on Debian slim as a non-root user.
#   docker build -t stratus .
#   docker run -p 9080:9080 -v stratus-data:/data stratus
# Variables are kept in the /data volume; options as flags after the image name or STRATUS_*
# environment variables. `docker kill --signal HUP` re-reads the configuration.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY filters filters
# The dist profile: release speed, stripped, no debug information (about 7 MB, not 42).
RUN cargo build --profile dist --locked --bin stratus

FROM debian:bookworm-slim
# ca-certificates: a `rediss://` cluster (a managed Redis) is verified against them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stratus \
    && useradd --system --uid 10001 --gid stratus --home-dir /data --shell /usr/sbin/nologin stratus \
    && mkdir /data && chown stratus:stratus /data
COPY --from=build /src/target/dist/stratus /usr/local/bin/stratus
USER 10001:10001
VOLUME /data
EXPOSE 9080
# Inside the container the server must listen on every interface to be reachable.
ENV STRATUS_LISTEN=0.0.0.0:9080 \
    STRATUS_DATA_DIR=/data
# GET /healthz answers 200 "ok" while the event loop runs; bash's /dev/tcp needs no HTTP
# client in the image. The port follows STRATUS_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${STRATUS_LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stratus"]
