# The patchops image: one static-enough binary on a distroless base, run as non-root.
# Build: docker build -t patchops .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin patchops

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/patchops /usr/local/bin/patchops
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/patchops"]
