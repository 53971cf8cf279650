# syntax=docker/dockerfile:1
# The machine-controller sidecar image. Gardener passes only args to the provider
# container, so the entrypoint is the binary itself.

FROM docker.io/library/rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is
# copied out because the target directory does not survive the RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p machine-controller \
    && install -D -m 0755 target/release/machine-controller /out/machine-controller

# glibc and libgcc only (TLS is rustls): distroless cc matches the bookworm builder.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/machine-controller /machine-controller
# Deployments written for the Go image run `./machine-controller` from `/`.
WORKDIR /
# distroless's nonroot user, numeric so that runAsNonRoot can verify it.
USER 65532:65532
ENTRYPOINT ["/machine-controller"]
