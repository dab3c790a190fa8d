# A small image of stratus: build with the Rust toolchain, run on Debian slim as a non-root user.
#   docker build -t stratus .
#   docker run -p 9080:9080 -v stratus-data:/data stratus
# Variables are kept in the /data volume; options as flags after the image name or STRATUS_*
# environment variables.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY filters filters
RUN cargo build --release --locked --bin stratus

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin stratus \
    && mkdir /data && chown stratus:stratus /data
COPY --from=build /src/target/release/stratus /usr/local/bin/stratus
USER stratus
VOLUME /data
EXPOSE 9080
# Inside the container the server must listen on every interface to be reachable.
ENV STRATUS_LISTEN=0.0.0.0:9080 \
    STRATUS_DATA_DIR=/data
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stratus"]
