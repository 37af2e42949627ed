# syntax=docker/dockerfile:1
# The regferry image: a release build of the `regferry` binary on a distroless base
# (glibc, CA certificates, no shell), running as uid 65532.
#
#   docker build -t REGISTRY/regferry:0.1.0 \
#     --build-arg REGFERRY_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm -p 9100:9100 -v "$PWD/regsync.yaml:/etc/regferry/regferry.yaml:ro" \
#     REGISTRY/regferry:0.1.0
#
# The binary is a Rust binary linked dynamically against glibc only (libc, libm, libgcc_s);
# TLS is rustls, so there is no OpenSSL. Builder and runtime are both Debian 12, so the
# glibc versions match.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# build.rs records the commit for `regferry version`; .git is not in the build context.
ARG REGFERRY_GIT_COMMIT=""
ENV REGFERRY_GIT_COMMIT=${REGFERRY_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p regferry-cli \
 && install -D -m 0755 target/release/regferry /out/regferry

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="regferry" \
      org.opencontainers.image.description="Container-image sync daemon: mirrors images and their OCI referrers; reads regsync's configuration" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/regferry /usr/local/bin/regferry
USER 65532:65532
# The admin listener (/healthz, /readyz, /metrics, webhooks); --listen overrides it.
ENV REGFERRY_LISTEN=0.0.0.0:9100
EXPOSE 9100
ENTRYPOINT ["regferry"]
CMD ["server", "-c", "/etc/regferry/regferry.yaml"]
