# syntax=docker/dockerfile:1
#
# thaw: MySQL/MariaDB wire-protocol sidecar.
#
#   docker build -t thaw:dev .
#   docker run --rm -p 127.0.0.1:3307:3307 -p 127.0.0.1:9105:9105 thaw:dev \
#       run --listen 0.0.0.0:3307 --admin 0.0.0.0:9105 --rules /etc/thaw/rules \
#           --backend db.example.internal:3306
#
# Image layout (docs/operations.md, "Container image"):
#   /usr/local/bin/thaw   the release binary (ENTRYPOINT)
#   /etc/thaw/rules/      the repository's rules/ folder; in Kubernetes a
#                         ConfigMap is mounted over it so rule updates hot-reload
#   user thaw (uid/gid 10001), no shell login, owns nothing it can write to
#
# scripts/lint-deploy.sh lints this file (hadolint) and builds the binary with
# the same command as the builder stage below: keep the two in step.

############################################################ build
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# Everything the build needs (see .dockerignore for what stays out).
COPY . .
# rules/ may still be empty in a checkout: make sure the folder exists so the
# runtime stage can always copy it.
# The cache mounts keep the crates.io index and compiled dependencies between
# builds; the binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    mkdir -p rules \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/thaw /out/thaw

############################################################ runtime
FROM debian:bookworm-slim
# A fixed numeric uid so Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 thaw \
    && useradd --system --uid 10001 --gid thaw --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin thaw
COPY --from=builder /out/thaw /usr/local/bin/thaw
COPY --from=builder --chown=root:root /src/rules/ /etc/thaw/rules/
USER 10001:10001
# 3307: the MySQL protocol port the app connects to.
# 9105: admin HTTP (/metrics, /livez, /readyz).
EXPOSE 3307 9105
# Liveness over the admin port with bash's /dev/tcp (no curl in the image).
# Kubernetes ignores HEALTHCHECK: deploy/kubernetes/ uses httpGet probes on
# /livez and /readyz instead. Move the admin port and this check must move too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9105 && printf 'GET /livez HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.1 200' <&3"]
# thaw drains on SIGTERM for shutdown_grace_secs (default 30): give
# `docker stop` more than that (docker stop -t 35, or --stop-timeout 35).
STOPSIGNAL SIGTERM
ENTRYPOINT ["thaw"]
CMD ["run", "--listen", "0.0.0.0:3307", "--admin", "0.0.0.0:9105", "--rules", "/etc/thaw/rules"]
