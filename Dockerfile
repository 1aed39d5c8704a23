# The patchops image: one binary on a distroless base, run as non-root.
# Build: docker build -t patchops .
# The debug info of the shipped binary: docker build --target debug --output type=local,dest=out .
FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, against a placeholder crate: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin patchops \
    && rm -rf src target/release/patchops target/release/deps/patchops-* \
       target/release/deps/libpatchops-* target/release/.fingerprint/patchops-*
COPY . .
# The binary stripped, its debug info split off into patchops.debug (scripts/dist).
RUN scripts/dist

FROM scratch AS debug
COPY --from=build /src/target/dist/patchops.debug /

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/patchops /usr/local/bin/patchops
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/patchops"]
