# syntax=docker/dockerfile:1
# housekeep's container image: the release binary on Google's distroless "cc" base (glibc,
# libgcc, CA certificates, tzdata, /etc/passwd with user 65532 "nonroot") and nothing else: no
# shell, no package manager. The binary needs glibc and libgcc_s (TLS is rustls with aws-lc, so
# no OpenSSL), which is why the base is cc rather than static; debian:bookworm-slim with the
# binary copied in would work too, at the price of a shell and apt in every pod.
#
#   docker build -t registry.example.com/housekeep:0.1.0 .
#   docker run --rm registry.example.com/housekeep:0.1.0 --help
#
# The Kubernetes manifests (deploy/kubernetes/) expect this image, tagged with the crate's
# version, running as UID 65532 with a read-only root filesystem: housekeep writes nothing but
# the manifests of list-orphans / delete-orphans, on their own volume.

# The compiler the project is built and tested with (rust-version in Cargo.toml is the minimum).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Only what the build reads (see .dockerignore): the manifest, the lock file, the sources and
# the SQL migrations embedded in the binary.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY sql ./sql
# The same build as CI: the release profile, with exactly the dependency versions of Cargo.lock.
# The caches only speed up rebuilds; the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/housekeep /out/housekeep

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/housekeep /usr/local/bin/housekeep
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
# The worker's /metrics, /healthz and /readyz when `listen` is set to 0.0.0.0:9718.
EXPOSE 9718
ENTRYPOINT ["/usr/local/bin/housekeep"]
CMD ["--help"]
