# Build: queries are checked at compile time against the committed .sqlx/ data, so the build
# needs no database.
FROM rust:1-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true
COPY Cargo.toml Cargo.lock build.rs ./
COPY .sqlx ./.sqlx
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY assets ./assets
COPY benches ./benches
COPY openapi.yaml checkout.example.toml ./
RUN cargo build --release --locked && strip target/release/checkout-server

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /app checkout
COPY --from=build /src/target/release/checkout-server /usr/local/bin/checkout-server
USER checkout
WORKDIR /app
ENV BIND_ADDR=0.0.0.0:8080
EXPOSE 8080
# bash (not dash) has /dev/tcp: the port answers.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["checkout-server"]
CMD ["serve"]
