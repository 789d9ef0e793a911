# Throwaway MariaDB server for the benchmark.
# Usage: source scripts/lib/mariadb.sh; mdb_start DIR; ...; mdb_stop
# Sets MDB_PORT. Uses free_port from scripts/lib/pg.sh.

mdb_start() {
  MDB_DIR=$1
  mkdir -p "$MDB_DIR"
  local user=(); [ "$(id -u)" -eq 0 ] && user=(--user=root)
  mariadb-install-db --no-defaults --datadir="$MDB_DIR/data" --auth-root-authentication-method=normal \
    --skip-test-db "${user[@]}" >/dev/null 2>&1
  MDB_PORT=$(free_port)
  /usr/sbin/mariadbd --no-defaults --datadir="$MDB_DIR/data" --socket="$MDB_DIR/s" --port="$MDB_PORT" \
    --bind-address=127.0.0.1 --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
    --character-set-server=utf8mb4 --log-error="$MDB_DIR/error.log" "${user[@]}" >/dev/null 2>&1 &
  MDB_PID=$!
  for _ in $(seq 100); do mdb_sql -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  export MDB_PORT MDB_PID
}

mdb_stop() {
  [ -n "${MDB_PID:-}" ] && kill "$MDB_PID" 2>/dev/null && wait "$MDB_PID" 2>/dev/null || true
}

mdb_sql() {
  mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MDB_PORT" -u root "$@"
}
