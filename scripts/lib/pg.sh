# Throwaway PostgreSQL cluster for the quickstart and the benchmark.
# Usage: source scripts/lib/pg.sh; pg_start DIR; ...; pg_stop
# Sets PG_PORT and PG_DIR. Never touches the machine's own server.

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  PG_DIR=$1
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$PG_DIR/data" --auth=trust --no-sync -U postgres >/dev/null
  fi
  PG_PORT=$(free_port)
  as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -w -l "$PG_DIR/log" \
    -o "-p $PG_PORT -k $PG_DIR -c fsync=off -c listen_addresses=127.0.0.1" start >/dev/null
  export PG_PORT PG_DIR
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

pg_psql() {
  local db=$1; shift
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}
