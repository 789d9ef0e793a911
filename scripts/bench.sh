#!/usr/bin/env bash
# Benchmark: envsync against the plain tools on the same data, same run.
#   scripts/bench.sh [SCALE]    (pgbench scale, default 50 ≈ 750 MB)
# Prints a table of times, ratios and the host's peak RSS. Quote ratios:
# absolute times on shared machines are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-50}
rounds=${ROUNDS:-2}

scripts/setup.sh >/dev/null
scripts/build.sh --release >/dev/null
host=target/release/envsync-host

source scripts/lib/pg.sh
work=$PWD/.envsync/bench
rm -rf "$work"; mkdir -p "$work"
pg_start "$work/pg"
trap pg_stop EXIT

echo "loading pgbench -i -s $scale ..." >&2
pg_psql postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$scale" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1
size=$(pg_psql bench -At -c "SELECT pg_size_pretty(pg_database_size('bench'))")

conn=(--db-host 127.0.0.1 --db-port "$PG_PORT" --db-user postgres)
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

declare -a base_backup env_backup base_restore env_restore rss_backup rss_restore
for round in $(seq 1 "$rounds"); do
  # backup: pg_dump -Fc -Z1 > file   vs   envsync backup into a local store
  t0=$(now); pg_dump -Fc -Z1 -d bench > "$work/plain.pgdump"; t1=$(now)
  base_backup+=("$(elapsed "$t0" "$t1")")
  t0=$(now)
  out=$($host --log-format json run --plugin postgres --op backup --database bench "${conn[@]}" --store "$work/store" 2>/dev/null)
  t1=$(now)
  env_backup+=("$(elapsed "$t0" "$t1")")
  rss_backup+=("$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['host_peak_rss_bytes'])" "$out")")

  # restore: createdb + pg_restore -d from the file   vs   envsync restore (scratch db + swap)
  pg_psql postgres -c "DROP DATABASE IF EXISTS plain_restore" -c "CREATE DATABASE plain_restore"
  t0=$(now); pg_restore -d plain_restore "$work/plain.pgdump"; t1=$(now)
  base_restore+=("$(elapsed "$t0" "$t1")")
  t0=$(now)
  out=$($host --log-format json run --plugin postgres --op restore --database bench_restored --from-database bench "${conn[@]}" --store "$work/store" 2>/dev/null)
  t1=$(now)
  env_restore+=("$(elapsed "$t0" "$t1")")
  rss_restore+=("$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['host_peak_rss_bytes'])" "$out")")
done

python3 - "$scale" "$size" "${base_backup[*]}" "${env_backup[*]}" "${base_restore[*]}" "${env_restore[*]}" "${rss_backup[*]}" "${rss_restore[*]}" <<'PY'
import sys, statistics as st
scale, size = sys.argv[1], sys.argv[2]
bb, eb, br, er, rb, rr = ([float(x) for x in a.split()] for a in sys.argv[3:9])
def row(name, base, env, rss, goal):
    b, e = st.median(base), st.median(env)
    print(f"| {name:<8} | {b:>9.2f} | {e:>9.2f} | {e/b:>6.3f} | {goal:<6} | {max(rss)/2**20:>8.1f} |")
print(f"pgbench scale {scale}, database {size}, median of {len(bb)} rounds")
print("| step     | plain (s) | envsync (s) | ratio | goal   | host peak RSS (MiB) |")
print("|----------|-----------|-----------|--------|--------|----------|")
row("backup", bb, eb, rb, "≤1.05")
row("restore", br, er, rr, "—")
print("baseline: backup `pg_dump -Fc -Z1 > file`; restore `createdb && pg_restore -d db file`")
PY
