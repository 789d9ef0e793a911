# syntax=docker/dockerfile:1
# envsync-host and the first-party plugins on a slim Debian with the
# PostgreSQL and MariaDB client programs the plugins run. See
# docs/kubernetes.md (build, push, render, apply).
#
#   docker build -t registry.example.com/envsync:0.1.0 .
#
# The build stage uses the toolchain rust-toolchain.toml pins (a test checks
# that RUST_VERSION matches it) and scripts/build.sh --release; the runtime
# stage has no compiler, no cargo and no package lists.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The guest target; rust-toolchain.toml names the same toolchain as the image.
COPY rust-toolchain.toml ./
RUN rustup target add wasm32-wasip2
COPY . .
# Cache mounts keep the registry and target folder between builds; the
# results are copied out of the cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build.sh --release \
    && install -D -m 0755 target/release/envsync-host /out/bin/envsync-host \
    && install -d /out/plugins/sanitisers \
    && install -m 0644 target/plugins/*.wasm /out/plugins/ \
    && install -m 0644 target/plugins/sanitisers/*.wasm /out/plugins/sanitisers/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Client programs the plugins start (pg_dump, pg_restore, psql; mariadb,
# mariadb-dump; sqlite3; mongosh below); CA certificates for S3 and the Pushgateway over
# HTTPS.
# Versions come from the Debian release (DEBIAN_RELEASE): pg_dump must be at
# least as new as the servers it dumps. Debian's /usr/bin/psql (and pg_dump,
# pg_restore) is a Perl wrapper that picks a client version; with the one
# version installed here it only costs about 16 ms of CPU per start, and a
# parallel restore starts a psql per chunk, so the real programs are linked
# into /usr/local/bin, which comes first on PATH.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        mariadb-client \
        postgresql-client \
        sqlite3 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/lib/postgresql/*/bin/psql /usr/lib/postgresql/*/bin/pg_dump \
        /usr/lib/postgresql/*/bin/pg_restore /usr/local/bin/
# mongosh (the mongodb plugin's only program) from npm, on Debian's Node.js;
# npm itself is removed again. Its modules land in /usr/local/lib, which the
# host lets mongosh read (programs.toml).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && npm install --global --omit=dev --no-audit --no-fund mongosh@2.12.0 \
    && npm cache clean --force \
    && apt-get purge -y --auto-remove npm \
    && rm -rf /var/lib/apt/lists/* /root/.npm
# The user the Kubernetes manifests run as (runAsUser 10001), and the folders
# they mount volumes on (state, compile cache, config).
RUN groupadd --system --gid 10001 envsync \
    && useradd --system --uid 10001 --gid envsync --home-dir /home/envsync \
        --create-home --shell /usr/sbin/nologin envsync \
    && install -d -o envsync -g envsync /var/lib/envsync /var/cache/envsync /etc/envsync
COPY --from=build /out/bin/envsync-host /usr/local/bin/envsync-host
# Engine plugins in the plugin folder, sanitisers in its sanitisers/
# subfolder: the folder decides the role (docs/plugins.md).
COPY --from=build /out/plugins/ /usr/lib/envsync/plugins/
# Plugins compiled once here, by this very binary, into a folder only root
# can write: a pod's empty cache does not compile them at every start
# (docs/decisions/0017-precompiled-plugins.md). A node whose CPU lacks a
# feature of the build machine's compiles into its cache instead.
RUN envsync-host --plugin-dir /usr/lib/envsync/plugins \
        plugins precompile --into /usr/lib/envsync/precompiled
ENV ENVSYNC_PLUGIN_DIR=/usr/lib/envsync/plugins \
    ENVSYNC_PRECOMPILED_DIR=/usr/lib/envsync/precompiled \
    ENVSYNC_STATE_DIR=/var/lib/envsync \
    ENVSYNC_CACHE_DIR=/var/cache/envsync
USER 10001:10001
WORKDIR /home/envsync
ENTRYPOINT ["envsync-host"]
CMD ["plugins", "list"]
