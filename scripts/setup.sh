#!/usr/bin/env bash
# Installs what building and testing envsync needs, idempotently: each step
# is skipped when its tool is already there. Safe to run as root without a
# terminal (CI) or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# PostgreSQL server binaries (throwaway test clusters) and client tools.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
if ! command -v pg_dump >/dev/null || ! command -v psql >/dev/null || ! command -v pg_restore >/dev/null; then
  echo "setup: installing PostgreSQL client tools"
  apt_install postgresql-client
fi
if ! command -v pgbench >/dev/null; then
  apt_install postgresql-contrib
fi

# The pinned toolchain and the guest target (rust-toolchain.toml).
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# MariaDB server and clients (throwaway test servers, the mysql plugin).
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
  echo "setup: installing MariaDB"
  apt_install mariadb-server mariadb-client
fi
if ! command -v mariadb-dump >/dev/null; then
  apt_install mariadb-client
fi

# S3-compatible test server (checks SigV4). Newer releases need a newer rustc.
if ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  echo "setup: installing s3s-fs 0.14.1 (a few minutes)"
  cargo install s3s-fs@0.14.1 --features binary --locked
fi

# Prometheus Pushgateway (metrics tests) and promtool (alert rule tests). Debian's
# packages ship services (ports 9090, 9091) that start where systemd runs; the tests
# start their own Pushgateway on a random port and do not use them.
if ! command -v prometheus-pushgateway >/dev/null && [ ! -x /usr/bin/prometheus-pushgateway ]; then
  echo "setup: installing prometheus-pushgateway"
  apt_install prometheus-pushgateway
fi
if ! command -v promtool >/dev/null && [ ! -x /usr/bin/promtool ]; then
  echo "setup: installing prometheus (for promtool)"
  apt_install prometheus
fi
