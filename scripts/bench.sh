#!/usr/bin/env bash
# Benchmark: envsync against the plain tools on the same data, in the same run.
#   scripts/bench.sh [SCALE]        pgbench scale, default 50 (about 750 MB)
#   ROUNDS=3 scripts/bench.sh       rounds per measurement (median is shown)
#   TARGETS="local s3 mysql sanitise search mongo parallel objects"  what to measure (default: all but
#                                   mongo, which takes ~17 minutes at its default size, objects and
#                                   parallel): PostgreSQL
#                                   to a local folder and to S3, MySQL/MariaDB to a folder, a
#                                   sanitised PostgreSQL backup against an unsanitised one, an
#                                   OpenSearch-API index (osmem-server) dumped and restored, and
#                                   a MongoDB database (SecantusDB) against plain mongosh scripts;
#                                   parallel: restores through a per-connection throttling proxy
#                                   (a remote many-core server, simulated) at --jobs 1/2/4
#                                   against serial pg_restore and mariadb, and without it against
#                                   pg_restore -j 2 (docs/benchmarks.md); objects: the objects
#                                   plugin against `aws s3 sync` (scripts/bench_objects.sh)
#   OBJECTS=10000                   objects: small objects copied
#   SEARCH_DOCS=1000000             documents of the search benchmark
#   MYSQL_ROWS=1500000              rows of the MariaDB benchmark table (~240 MB)
#   MONGO_DOCS=1000000              documents of the MongoDB benchmark (one collection)
#   PAR_MB=400                      parallel: size of its PostgreSQL database (about 1.2 × MB)
#   PAR_MYSQL_MB=200                parallel: size of its MariaDB database (about 0.9 × MB)
#   PAR_RATE=10MiB                  parallel: the proxy's limit for each connection and direction
#                                   in front of PostgreSQL
#   PAR_MYSQL_RATE=3MiB             the same in front of MariaDB, lower: a MariaDB session does
#                                   about 4 times PostgreSQL's server work per byte, and the
#                                   proxy, not this machine's 2 cores, must bound each session
#                                   for the simulation to hold (the direct serial rows show it)
#   HOST_PROFILE=release            the host build to measure: release, or debug (quicker to
#                                   build; say so next to the figures)
#   NO_BUILD=1                      use the host, plugins and throttle-proxy already built
#                                   (target/PROFILE, target/plugins) instead of building them
# Prints a table of times, ratios and the host's peak RSS. Quote the ratios:
# absolute times on shared machines are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-50}
rounds=${ROUNDS:-2}
targets=${TARGETS:-local s3 mysql sanitise search}
search_docs=${SEARCH_DOCS:-1000000}
mysql_rows=${MYSQL_ROWS:-1500000}
mongo_docs=${MONGO_DOCS:-1000000}
par_mb=${PAR_MB:-400}
par_mysql_mb=${PAR_MYSQL_MB:-200}
par_rate=${PAR_RATE:-10MiB}
par_mysql_rate=${PAR_MYSQL_RATE:-3MiB}
profile=${HOST_PROFILE:-release}
case $profile in
  release) build_flag=(--release) ;;
  debug) build_flag=() ;;
  *) echo "HOST_PROFILE=$profile: use release or debug" >&2; exit 2 ;;
esac

scripts/setup.sh >/dev/null
if [ "${NO_BUILD:-0}" != 1 ]; then
  scripts/build.sh "${build_flag[@]}" >/dev/null
  if [[ " $targets " == *" parallel "* ]]; then
    cargo build "${build_flag[@]}" -q -p envsync-tests --bin throttle-proxy
  fi
fi
host=$PWD/target/$profile/envsync-host
throttle_proxy=$PWD/target/$profile/throttle-proxy
if [[ " $targets " == *" s3 "* || " $targets " == *" objects "* ]] && ! command -v aws >/dev/null; then
  pip install -q awscli # the baseline's S3 client
fi

source scripts/lib/pg.sh
source scripts/lib/mariadb.sh
# PostgreSQL's client programs themselves, for envsync and the plain tools
# alike: Debian's /usr/bin/psql is a Perl wrapper costing about 16 ms of CPU
# per start, and a parallel restore starts a psql per chunk (the Docker
# image links the real programs into /usr/local/bin for the same reason).
PATH="$(pg_bin):$PATH"
export PATH
work=$PWD/.envsync/bench
rm -rf "$work"; mkdir -p "$work"
pg_start "$work/pg"
s3_pid=
search_pid=
mongo_pid=
proxy_pids=()
# `|| true`: wait reports the signal, and set -e would end the cleanup there
# (skipping the servers after it).
stop_pid() { [ -z "$1" ] || { kill "$1" && wait "$1"; } 2>/dev/null || true; }
cleanup() {
  for pid in "${proxy_pids[@]}" "$s3_pid" "$search_pid" "$mongo_pid"; do stop_pid "$pid"; done
  pg_stop; mdb_stop
}
trap cleanup EXIT

echo "loading pgbench -i -s $scale ..." >&2
pg_psql postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$scale" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1
size=$(pg_psql bench -At -c "SELECT pg_size_pretty(pg_database_size('bench'))")
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres
conn=(--db-host 127.0.0.1 --db-port "$PG_PORT" --db-user postgres)

if [[ " $targets " == *" s3 "* ]]; then
  s3_port=$(free_port)
  mkdir -p "$work/s3/bench"
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key benchkey --secret-key benchsecret "$work/s3" >/dev/null 2>&1 &
  s3_pid=$!
  export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port ENVSYNC_STATE_DIR=$work/state
  for _ in $(seq 50); do aws s3 ls --endpoint-url "$AWS_ENDPOINT_URL" >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [[ " $targets " == *" mysql "* ]]; then
  echo "loading $mysql_rows rows into MariaDB ..." >&2
  mdb_start "$work/mariadb"
  mdb_sql -e "CREATE DATABASE bench"
  mdb_sql bench -e "CREATE TABLE events (id BIGINT PRIMARY KEY, account INT NOT NULL, kind VARCHAR(32),
      payload TEXT, amount DECIMAL(12,2), happened DATETIME(3), KEY (account)) ENGINE=InnoDB;
    INSERT INTO events SELECT seq, seq % 9973, CONCAT('kind-', seq % 17),
      REPEAT(MD5(seq), 3), (seq % 100000) / 100, '2026-01-01' + INTERVAL seq SECOND
      FROM seq_1_to_$mysql_rows;"
  mysql_size=$(mdb_sql -N -e "SELECT CONCAT(ROUND(SUM(data_length + index_length) / 1048576), ' MiB') FROM information_schema.tables WHERE table_schema = 'bench'")
  mysql_conn=(--db-host 127.0.0.1 --db-port "$MDB_PORT" --db-user root)
fi

if [[ " $targets " == *" search "* ]]; then
  echo "loading $search_docs documents into osmem-server ..." >&2
  osmem=$(python3 -c 'import osmem_server, os; print(os.path.dirname(osmem_server.__file__))')/bin/osmem-server
  search_port=$(free_port)
  "$osmem" -addr "127.0.0.1:$search_port" -no-stdin-watch >/dev/null 2>&1 &
  search_pid=$!
  python3 - "$search_port" "$search_docs" <<'PY'
import json, sys, time, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(base + path, data=body, method=method, headers={"content-type": ctype})
    return json.load(urllib.request.urlopen(req, timeout=300))
for _ in range(100):
    try: call("GET", "/"); break
    except Exception: time.sleep(0.1)
call("PUT", "/events", json.dumps({"mappings": {"properties": {"user": {"type": "keyword"}, "n": {"type": "long"},
     "at": {"type": "date"}, "msg": {"type": "text"}}}}).encode())
batch = 10000
for start in range(0, n, batch):
    lines = []
    for i in range(start, min(n, start + batch)):
        lines.append('{"index":{"_index":"events","_id":"%d"}}' % i)
        lines.append(json.dumps({"user": f"u{i % 5000}", "n": i, "at": "2026-11-21T10:00:00Z", "msg": f"event {i} happened"}))
    r = call("POST", "/_bulk", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
    assert not r.get("errors"), r
call("POST", "/events/_refresh")
PY
fi

if [[ " $targets " == *" mongo "* ]]; then
  # SecantusDB as tests/harness/mongo.rs starts it: a single-node replica set on a
  # free port of 127.0.0.1 (another port if that one was taken meanwhile).
  mkdir -p "$work/mongo"
  mongo_eval() { mongosh --quiet --norc "mongodb://127.0.0.1:$mongo_port/$1?directConnection=true" "${@:2}" </dev/null; }
  for attempt in $(seq 8); do
    mongo_port=$(free_port)
    (cd "$work/mongo" && exec python3 -m secantus --host 127.0.0.1 --port "$mongo_port" \
      --storage-path "$work/mongo/data" --log-level WARNING --cache-size 256M \
      </dev/null >>"$work/mongo/secantus.log" 2>&1) &
    mongo_pid=$!
    for _ in $(seq 300); do # 60 s
      kill -0 "$mongo_pid" 2>/dev/null || break
      mongo_eval admin --eval 'print(db.runCommand({ping: 1}).ok)' >/dev/null 2>&1 && break 2
      sleep 0.2
    done
    kill "$mongo_pid" 2>/dev/null || true; wait "$mongo_pid" 2>/dev/null || true; mongo_pid=
    grep -q "in use" "$work/mongo/secantus.log" || break
  done
  [ -n "$mongo_pid" ] || { echo "SecantusDB did not start:" >&2; cat "$work/mongo/secantus.log" >&2; exit 1; }
  echo "loading $mongo_docs documents into SecantusDB ..." >&2
  BENCH_DOCS=$mongo_docs mongo_eval bench scripts/bench/mongo-load.js >/dev/null
  mongo_size=$(mongo_eval bench --eval 'const s = db.stats(); print(Math.round(s.dataSize / 1048576) + " MiB of BSON, avg " + Math.round(s.avgObjSize) + " B")')
fi

now() { date +%s.%N; }
results=$work/results.tsv
: > "$results"
# record TARGET STEP WHO SECONDS RSS
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; }
timed() { local t0 t1; t0=$(now); "$@"; t1=$(now); python3 -c "print(f'{$t1 - $t0:.3f}')"; }
envsync() { # runs the host, prints "SECONDS RSS"
  local t0 t1 out; t0=$(now)
  out=$("$host" --log-format json "$@" 2>"$work/host.err") || { cat "$work/host.err" >&2; exit 1; }
  t1=$(now)
  python3 -c "import json,sys; print(f'{$t1 - $t0:.3f}', json.loads(sys.argv[1])['host_peak_rss_bytes'])" "$out"
}
# runs a configured task, prints "SECONDS RSS ROWS_PER_S BYTES_PER_S" (RSS of the child, from wait4)
envsync_task() {
  python3 - "$host" "$@" <<'PY'
import json, re, resource, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen([sys.argv[1], "--log-format", "json", *sys.argv[2:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out, err = p.communicate()
secs = time.monotonic() - t0
if p.returncode != 0:
    sys.stderr.write(err); sys.exit(1)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
summary = " ".join(s.get("summary", "") for s in json.loads(out)["steps"])
m = re.search(r"\(([0-9]+) rows/s, ([0-9.]+) (B|KiB|MiB|GiB)/s\)", summary)
rate, bps = (0, 0)
if m:
    rate = int(m.group(1)); bps = float(m.group(2)) * {"B": 1, "KiB": 1024, "MiB": 2**20, "GiB": 2**30}[m.group(3)]
print(f"{secs:.3f} {rss} {rate} {bps:.0f}")
PY
}
fresh_db() { pg_psql postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1; }
# The parallel rows' plain restores, timed with creating their empty database, as envsync's
# times include creating its scratch database: the same job (`createdb && pg_restore`).
# plain_pg PORT PG_RESTORE_ARGS...: into a new database par_plain (dropped first, untimed).
plain_pg() {
  local port=$1; shift
  createdb -h 127.0.0.1 -p "$port" -U postgres par_plain && pg_restore -h 127.0.0.1 -p "$port" -U postgres -d par_plain "$@"
}
# plain_mysql PORT: the plain SQL dump into a new MariaDB database par_plain.
plain_mysql() {
  local m=(mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$1" -u root)
  "${m[@]}" -e "CREATE DATABASE par_plain" && "${m[@]}" par_plain < "$work/par.sql"
}
drop_par_plain() { pg_psql postgres -c "DROP DATABASE IF EXISTS par_plain" >/dev/null 2>&1; }

# Starts throttle-proxy in front of 127.0.0.1:PORT and sets proxy_port to the port it listens
# on. Not in a $(…) subshell: the cleanup must know its pid, and it must not hold our stdout.
# start_throttle_proxy PORT RATE: sets proxy_port.
start_throttle_proxy() {
  local addr_file=$work/proxy-$1.addr
  "$throttle_proxy" --target "127.0.0.1:$1" --rate "$2" > "$addr_file" 2> "$work/proxy-$1.log" &
  proxy_pids+=($!)
  for _ in $(seq 100); do [ -s "$addr_file" ] && break; sleep 0.05; done
  [ -s "$addr_file" ] || { echo "throttle-proxy did not start:" >&2; cat "$work/proxy-$1.log" >&2; exit 1; }
  proxy_port=$(sed 's/.*://' "$addr_file")
}

if [[ " $targets " == *" parallel "* ]]; then
  echo "loading the parallel benchmark's PostgreSQL database (PAR_MB=$par_mb) ..." >&2
  pg_psql postgres -c "CREATE DATABASE par"
  pg_psql par -v mb="$par_mb" -f scripts/bench/par-load.sql >/dev/null
  par_size=$(pg_psql par -At -c "SELECT pg_size_pretty(pg_database_size('par'))")
  # "table size size …" of the largest tables (a partitioned table counts its partitions).
  par_tables=$(pg_psql par -At -F ' ' -c "SELECT coalesce(p.relname, c.relname),
      pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c
      LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
      WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
      GROUP BY 1 ORDER BY sum(pg_total_relation_size(c.oid)) DESC LIMIT 4" | paste -sd, | sed 's/,/, /g')
  # Row counts of every table: each restore must give the same (checked outside the timings).
  par_counts_sql="SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM (
      SELECT 'customers' t, count(*) n FROM customers UNION ALL SELECT 'products', count(*) FROM products
      UNION ALL SELECT 'orders', count(*) FROM orders UNION ALL SELECT 'order_items', count(*) FROM order_items
      UNION ALL SELECT 'events', count(*) FROM events) x"
  par_counts=$(pg_psql par -At -c "$par_counts_sql")
  pg_dump -Fc -Z1 -d par > "$work/par.pgdump"
  pg_dump -Fd -Z1 -j 2 -d par -f "$work/par.dir"
  # --jobs N where this build has it (issue 17); otherwise jobs 1 is today's single stream.
  run_help=$("$host" run --help 2>&1 || true)
  if [[ $run_help == *--jobs* ]]; then par_jobs=(1 2 4); has_jobs=1; else par_jobs=(1); has_jobs=0; fi
  # With --jobs the backup is chunked (one snapshot, 4 sessions), so restores can load in parallel.
  # shellcheck disable=SC2046
  envsync run --plugin postgres --op backup --database par "${conn[@]}" --store "$work/par-store" \
    $([ "$has_jobs" = 1 ] && echo "--jobs 4") >/dev/null
  start_throttle_proxy "$PG_PORT" "$par_rate"; pg_proxy_port=$proxy_port

  echo "loading the parallel benchmark's MariaDB database (PAR_MYSQL_MB=$par_mysql_mb) ..." >&2
  [ -n "${MDB_PORT:-}" ] || mdb_start "$work/mariadb"
  par_orders=$((par_mysql_mb * 2000))
  mdb_sql -e "CREATE DATABASE par"
  mdb_sql par -e "
    CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, email VARCHAR(64) NOT NULL,
      created DATETIME NOT NULL, KEY (email)) ENGINE=InnoDB;
    CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, placed DATETIME NOT NULL,
      status VARCHAR(16) NOT NULL, note VARCHAR(100), KEY (placed),
      FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB;
    CREATE TABLE order_items (order_id BIGINT NOT NULL, line INT NOT NULL, sku VARCHAR(16) NOT NULL,
      qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, PRIMARY KEY (order_id, line), KEY (sku),
      FOREIGN KEY (order_id) REFERENCES orders (id)) ENGINE=InnoDB;
    INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.test'),
      '2020-01-01' + INTERVAL seq SECOND FROM seq_1_to_$((par_orders / 4));
    INSERT INTO orders SELECT seq, 1 + seq % $((par_orders / 4)), '2025-01-01' + INTERVAL seq * 3 SECOND,
      ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'), REPEAT(MD5(seq), 3) FROM seq_1_to_$par_orders;
    INSERT INTO order_items SELECT o.seq, l.seq, CONCAT('SKU-', LPAD((o.seq * 7 + l.seq) % 20000, 8, '0')),
      1 + o.seq % 5, ((o.seq + l.seq) % 10000) / 10 FROM seq_1_to_$par_orders o, seq_1_to_2 l;"
  mdb_sql par -e "ANALYZE TABLE customers, orders, order_items" >/dev/null # fresh statistics for the size
  par_mysql_size=$(mdb_sql -N -e "SELECT CONCAT(ROUND(SUM(data_length + index_length) / 1048576), ' MiB') FROM information_schema.tables WHERE table_schema = 'par'")
  par_mysql_counts_sql="SELECT CONCAT_WS(' ', (SELECT COUNT(*) FROM customers), (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM order_items))"
  par_mysql_counts=$(mdb_sql par -N -e "$par_mysql_counts_sql")
  mariadb-dump --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MDB_PORT" -u root --single-transaction --quick par > "$work/par.sql"
  # With --jobs the backup is chunked (decision 0022), so restores can load in parallel.
  # shellcheck disable=SC2046 # the flag is two words or none
  envsync run --plugin mysql --op backup --database par --db-host 127.0.0.1 --db-port "$MDB_PORT" --db-user root \
    --store "$work/par-mysql-store" $( [ "$has_jobs" = 1 ] && echo "--jobs 4" ) >/dev/null
  start_throttle_proxy "$MDB_PORT" "$par_mysql_rate"; mdb_proxy_port=$proxy_port
fi

for round in $(seq 1 "$rounds"); do
  echo "round $round ..." >&2
  for target in $targets; do
    # objects runs once after the rounds, with its own servers (below).
    [ "$target" = objects ] && continue
    case $target in
      local)
        store=$work/store
        plain_backup() { pg_dump -Fc -Z1 -d bench > "$work/plain.pgdump"; }
        plain_restore() { pg_restore -d plain_restore "$work/plain.pgdump"; }
        ;;
      s3)
        store=s3://bench/envsync
        plain_backup() { pg_dump -Fc -Z1 -d bench | aws s3 cp - s3://bench/plain/bench.pgdump --quiet; }
        plain_restore() { aws s3 cp s3://bench/plain/bench.pgdump - --quiet | pg_restore -d plain_restore; }
        ;;
    esac
    if [ "$target" = parallel ]; then
      # Outside the timings: a failed restore shows here, not as a short time.
      par_check_pg() {
        local got; got=$(pg_psql "$1" -At -c "$par_counts_sql")
        [ "$got" = "$par_counts" ] || { echo "parallel: $1 holds $got, not $par_counts" >&2; exit 1; }
      }
      par_check_mysql() {
        local got; got=$(mdb_sql "$1" -N -e "$par_mysql_counts_sql")
        [ "$got" = "$par_mysql_counts" ] || { echo "parallel: MariaDB $1 holds $got rows, not $par_mysql_counts" >&2; exit 1; }
      }
      jobs_flag() { [ "$has_jobs" = 1 ] && echo "--jobs $1" || true; }
      # A restore at some --jobs that fails (e.g. a plugin without chunked artifacts yet) is
      # reported and shown as n/a; the other rows still get measured.
      par_failed() { echo "parallel: envsync restore ($1) failed, see above; shown as n/a" >&2; }
      # Through the proxy: serial pg_restore against envsync at each --jobs. Every restore
      # goes into a database that does not exist yet (envsync: dropped first, so no old copy to swap out).
      drop_par_plain
      record parallel proxy-pg plain "$(timed plain_pg "$pg_proxy_port" "$work/par.pgdump")" 0
      par_check_pg par_plain
      for j in "${par_jobs[@]}"; do
        pg_psql postgres -c "DROP DATABASE IF EXISTS par_restored" >/dev/null 2>&1
        # shellcheck disable=SC2046 # the flag is two words or none
        if read -r secs rss < <(envsync run --plugin postgres --op restore --database par_restored --from-database par \
          --db-host 127.0.0.1 --db-port "$pg_proxy_port" --db-user postgres --store "$work/par-store" $(jobs_flag "$j")); then
          record parallel "proxy-pg-j$j" envsync "$secs" "$rss"
          if [ "$j" = 4 ]; then
            full_j4=$secs
            # The kill below lands at 80 % of the fastest full restore so far: a round slowed
            # by the machine would otherwise let the restore end before the kill.
            fastest_j4=$(python3 -c "print(min($secs, ${fastest_j4:-$secs}))")
          fi
          par_check_pg par_restored
        else
          par_failed "PostgreSQL --jobs $j"
        fi
      done
      # Resume (issue 17): a --jobs 4 restore through the proxy, its host SIGKILLed at 80 % of the
      # fastest full --jobs 4 restore so far, then the same restore again, timed: it skips the
      # data chunks and the indexes already committed (the scratch database's bookkeeping).
      if [ "$has_jobs" = 1 ] && [ -n "${full_j4:-}" ]; then
        pg_psql postgres -c "DROP DATABASE IF EXISTS par_restored" >/dev/null 2>&1
        "$host" run --plugin postgres --op restore --database par_restored --from-database par \
          --db-host 127.0.0.1 --db-port "$pg_proxy_port" --db-user postgres --store "$work/par-store" \
          --jobs 4 >/dev/null 2>"$work/host-killed.err" &
        victim=$!
        sleep "$(python3 -c "print($fastest_j4 * 0.8)")"
        kill -9 "$victim" 2>/dev/null || true
        victim_rc=0; wait "$victim" 2>/dev/null || victim_rc=$?
        done_at_kill=$(pg_psql par_restored-restore -At -c \
          "SELECT count(*) FILTER (WHERE name LIKE 'data-%') || ' data chunks and ' || \
           count(*) FILTER (WHERE name LIKE 'post-data-%') || ' schema entries'
           FROM envsync_restore.loaded" 2>/dev/null || echo "nothing")
        # 137: the SIGKILL ended it. Anything else: this restore ended before the kill (a round
        # whose full restore was slow), and a rerun now would be a whole restore, not a resume.
        if [ "$victim_rc" != 137 ]; then
          echo "parallel: the restore to interrupt ended (exit $victim_rc) before 80 % of ${fastest_j4}s;" \
            "no resume measured this round" >&2
        else
          echo "parallel: host killed at 80 % of ${fastest_j4}s with $done_at_kill committed" >&2
          echo "$done_at_kill" > "$work/resume-point"
        fi
        if [ "$victim_rc" = 137 ] && read -r secs rss < <(envsync run --plugin postgres --op restore --database par_restored --from-database par \
          --db-host 127.0.0.1 --db-port "$pg_proxy_port" --db-user postgres --store "$work/par-store" --jobs 4); then
          record parallel proxy-pg-resume envsync "$secs" "$rss"
          record parallel proxy-pg-resume-full plain "$full_j4" 0 # the full restore it is compared with
          cp "$work/host.err" "$work/resume-rerun-$round.log" # where a slow rerun spent its time
          par_check_pg par_restored
        else
          par_failed "PostgreSQL resume"
        fi
      fi
      # Without it: pg_restore -j 2 from a local directory-format dump against envsync; serial
      # pg_restore too, to show how much the proxy slowed it.
      drop_par_plain
      record parallel direct-pg-serial plain "$(timed plain_pg "$PG_PORT" "$work/par.pgdump")" 0
      par_check_pg par_plain
      drop_par_plain
      record parallel direct-pg plain "$(timed plain_pg "$PG_PORT" -j 2 "$work/par.dir")" 0
      par_check_pg par_plain
      pg_psql postgres -c "DROP DATABASE IF EXISTS par_restored" >/dev/null 2>&1
      # shellcheck disable=SC2046
      read -r secs rss < <(envsync run --plugin postgres --op restore --database par_restored --from-database par \
        "${conn[@]}" --store "$work/par-store" $(jobs_flag 2))
      record parallel direct-pg envsync "$secs" "$rss"
      par_check_pg par_restored
      pg_psql postgres -c "DROP DATABASE IF EXISTS par_restored" -c "DROP DATABASE IF EXISTS par_plain" >/dev/null 2>&1
      # MariaDB through the proxy: the plain SQL dump into mariadb against envsync.
      mdb_sql -e "DROP DATABASE IF EXISTS par_plain"
      record parallel proxy-mysql plain "$(timed plain_mysql "$mdb_proxy_port")" 0
      par_check_mysql par_plain
      for j in "${par_jobs[@]}"; do
        mdb_sql -e "DROP DATABASE IF EXISTS par_restored"
        # shellcheck disable=SC2046
        if read -r secs rss < <(envsync run --plugin mysql --op restore --database par_restored --from-database par \
          --db-host 127.0.0.1 --db-port "$mdb_proxy_port" --db-user root --store "$work/par-mysql-store" $(jobs_flag "$j")); then
          record parallel "proxy-mysql-j$j" envsync "$secs" "$rss"
          par_check_mysql par_restored
        else
          par_failed "MariaDB --jobs $j"
        fi
      done
      # Without the proxy, serial: the server's own work for the same dump, which the
      # proxied sessions share on this machine's 2 cores (the floor of the proxied rows).
      mdb_sql -e "DROP DATABASE IF EXISTS par_plain"
      record parallel direct-mysql-serial plain "$(timed plain_mysql "$MDB_PORT")" 0
      par_check_mysql par_plain
      mdb_sql -e "DROP DATABASE IF EXISTS par_restored; DROP DATABASE IF EXISTS par_plain"
      continue
    fi
    if [ "$target" = search ]; then
      # No plain-tools baseline is measured for search yet: documents per second each
      # way and the host's peak RSS.
      read -r secs rss < <(envsync run --plugin elasticsearch --op backup --database events \
        --db-host 127.0.0.1 --db-port "$search_port" --store "$work/search-store")
      record search backup envsync "$secs" "$rss"
      read -r secs rss < <(envsync run --plugin elasticsearch --op restore --database events \
        --db-host 127.0.0.1 --db-port "$search_port" --store "$work/search-store")
      record search restore envsync "$secs" "$rss"
      continue
    fi
    if [ "$target" = mongo ]; then
      # Plain mongosh scripts against envsync's mongodb plugin (which also runs mongosh).
      # Both restores go into a database dropped first.
      mongo_plain() { BENCH_FILE=$work/plain.ejson mongo_eval "$1" "scripts/bench/mongo-$2.js" >/dev/null; }
      # Outside the timings: a failed step shows here, not as a short time.
      mongo_check() {
        local n; n=$(mongo_eval "$1" --eval 'print(db.events.countDocuments({}))')
        [ "$n" = "$mongo_docs" ] || { echo "mongo: $1.events holds ${n:-?} documents, not $mongo_docs" >&2; exit 1; }
      }
      record mongo backup plain "$(timed mongo_plain bench export)" 0
      [ "$(wc -l < "$work/plain.ejson")" = $((mongo_docs + 1)) ] || { echo "mongo: the plain export is incomplete" >&2; exit 1; }
      read -r secs rss < <(envsync run --plugin mongodb --op backup --database bench \
        --db-host 127.0.0.1 --db-port "$mongo_port" --store "$work/mongo-store")
      record mongo backup envsync "$secs" "$rss"
      mongo_eval plain_restore --eval 'db.dropDatabase()' >/dev/null
      record mongo restore plain "$(timed mongo_plain plain_restore import)" 0
      mongo_check plain_restore
      mongo_eval bench_restored --eval 'db.dropDatabase()' >/dev/null
      read -r secs rss < <(envsync run --plugin mongodb --op restore --database bench_restored --from-database bench \
        --db-host 127.0.0.1 --db-port "$mongo_port" --store "$work/mongo-store")
      record mongo restore envsync "$secs" "$rss"
      swap=$(python3 scripts/bench/mongo-swap.py "$work/host.err") # the swap's share of it
      [ -n "$swap" ] && record mongo swap envsync "$swap" 0
      mongo_check bench_restored
      continue
    fi
    if [ "$target" = sanitise ]; then
      # The unsanitised backup is the baseline; both go to a local folder.
      if [ ! -f "$work/sanitise/env.toml" ]; then
        mkdir -p "$work/sanitise"
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/sanitise/salt.key"
        cat > "$work/sanitise/rules.toml" <<'TOML'
[tables.pgbench_accounts.columns]
aid = "keep"
bid = "keep"
abalance = { fixed = "0" }
filler = "lorem"
[tables.pgbench_branches.columns]
bid = "keep"
bbalance = "keep"
filler = "keep"
[tables.pgbench_tellers.columns]
tid = "keep"
bid = "keep"
tbalance = "keep"
filler = "keep"
[tables.pgbench_history.columns]
tid = "keep"
bid = "keep"
aid = "keep"
delta = "keep"
mtime = "keep"
filler = "keep"
TOML
        for task in plain masked masked_jobs2; do
          extra=""
          [ "$task" != plain ] && extra='[task.sanitise]
sanitiser = "sanitise"
rules = "rules.toml"
salt_file = "salt.key"
strict = true'
          cat >> "$work/sanitise/env.toml" <<TOML
$( [ "$task" = plain ] && printf '[environment]\nname = "bench"\nstore = "%s"\nstate_dir = "state"\n' "$work/sanitise-store" )
[[task]]
name = "$task"
plugin = "postgres"
$( [ "$task" = masked_jobs2 ] && echo 'jobs = 2' )
[task.database]
host = "127.0.0.1"
port = $PG_PORT
user = "postgres"
name = "bench"
$extra
[[task.step]]
op = "backup"
TOML
        done
      fi
      read -r secs rss _ _ < <(envsync_task run --config "$work/sanitise/env.toml" --task plain)
      record sanitise backup plain "$secs" "$rss"
      read -r secs rss rows_s bytes_s < <(envsync_task run --config "$work/sanitise/env.toml" --task masked)
      record sanitise backup envsync "$secs" "$rss"
      echo "$rows_s $bytes_s" >> "$work/sanitiser-rate"
      # Chunked, sanitised by two sanitiser instances at once (issue 17).
      read -r secs rss _ _ < <(envsync_task run --config "$work/sanitise/env.toml" --task masked_jobs2)
      record sanitise backup-jobs2 envsync "$secs" "$rss"
      continue
    fi
    if [ "$target" = mysql ]; then
      dump=(mariadb-dump --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MDB_PORT" -u root --single-transaction --quick)
      record mysql backup plain "$(timed bash -c '"$@" bench | gzip -1 > "$0"' "$work/plain.sql.gz" "${dump[@]}")" 0
      read -r secs rss < <(envsync run --plugin mysql --op backup --database bench "${mysql_conn[@]}" --store "$work/mysql-store")
      record mysql backup envsync "$secs" "$rss"
      mdb_sql -e "DROP DATABASE IF EXISTS plain_restore; CREATE DATABASE plain_restore"
      record mysql restore plain "$(timed bash -c 'gunzip < "$0" | mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$1" -u root plain_restore' "$work/plain.sql.gz" "$MDB_PORT")" 0
      read -r secs rss < <(envsync run --plugin mysql --op restore --database bench_restored --from-database bench "${mysql_conn[@]}" --store "$work/mysql-store")
      record mysql restore envsync "$secs" "$rss"
      continue
    fi
    record "$target" backup plain "$(timed plain_backup)" 0
    read -r secs rss < <(envsync run --plugin postgres --op backup --database bench "${conn[@]}" --store "$store")
    record "$target" backup envsync "$secs" "$rss"
    fresh_db plain_restore
    record "$target" restore plain "$(timed plain_restore)" 0
    read -r secs rss < <(envsync run --plugin postgres --op restore --database bench_restored --from-database bench "${conn[@]}" --store "$store")
    record "$target" restore envsync "$secs" "$rss"
  done
done

python3 - "$scale" "$size" "$rounds" "$results" "${mysql_size:-}" "$work/sanitiser-rate" "$search_docs" \
  "$mongo_docs" "${mongo_size:-}" "${par_size:-}" "${par_tables:-}" "${par_mysql_size:-}" "$par_rate" "$par_mysql_rate" \
  "${has_jobs:-0}" "$profile" <<'PY'
import os, sys, statistics as st, collections
scale, size, rounds, path, mysql_size, rates, search_docs, mongo_docs, mongo_size = sys.argv[1:10]
par_size, par_tables, par_mysql_size, par_rate, par_mysql_rate, has_jobs, profile = sys.argv[10:17]
runs = collections.defaultdict(list)
rss = collections.defaultdict(int)
for line in open(path):
    target, step, who, secs, peak = line.split("\t")
    runs[(target, step, who)].append(float(secs))
    rss[(target, step)] = max(rss[(target, step)], int(peak))
goals = {("local", "backup"): "≤ 1.05", ("s3", "backup"): "≤ 1.0", ("s3", "restore"): "—", ("local", "restore"): "—",
         ("mysql", "backup"): "≤ 1.0", ("mysql", "restore"): "≤ 1.05", ("sanitise", "backup"): "≤ 1.5",
         ("mongo", "backup"): "≤ 1.2", ("mongo", "restore"): "≤ 1.2"}
sql = ("local", "s3", "mysql", "sanitise")
if any(key[0] in sql for key in runs):
    print(f"PostgreSQL: pgbench scale {scale}, database {size}; MariaDB: {mysql_size or '-'}; median of {rounds} rounds")
    print()
    print("| target | step    | plain tools (s) | envsync (s) | ratio | goal   | host peak RSS (MiB) |")
    print("|--------|---------|----------------:|------------:|------:|--------|--------------------:|")
    for target in sql:
        for step in ("backup", "restore"):
            if (target, step, "plain") not in runs:
                continue
            p, e = st.median(runs[(target, step, "plain")]), st.median(runs[(target, step, "envsync")])
            print(f"| {target:<6} | {step:<7} | {p:>15.2f} | {e:>11.2f} | {e/p:>5.2f} | {goals[(target, step)]:<6} | {rss[(target, step)]/2**20:>19.1f} |")
    print()
    print("plain tools: local backup `pg_dump -Fc -Z1 > file`, restore `createdb; pg_restore -d db file`;")
    print("S3 backup `pg_dump -Fc -Z1 | aws s3 cp - s3://…`, restore `aws s3 cp s3://… - | pg_restore -d db`.")
    print("MySQL (store: local folder) backup `mariadb-dump --single-transaction --quick | gzip -1 > file`,")
    print("restore `gunzip < file | mariadb db`; envsync stores zstd (level 1).")
    print("envsync restores load into a scratch database and swap it in (plus checksum verification).")
    print("sanitise: plain tools = envsync's unsanitised backup (custom format) in the same run; envsync = the")
    print("sanitised backup (plain COPY rewritten through the `sanitise` sanitiser: filler → lorem, abalance → 0).")
    if ("sanitise", "backup-jobs2", "envsync") in runs:
        p = st.median(runs[("sanitise", "backup", "plain")])
        one = st.median(runs[("sanitise", "backup", "envsync")])
        two = st.median(runs[("sanitise", "backup-jobs2", "envsync")])
        print(f"sanitised backup with `jobs = 2` (chunked; rows sanitised by 2 sanitiser instances at once): "
              f"{two:.2f} s, {two/p:.2f}× the unsanitised backup, {two/one:.2f}× the one-stream sanitised backup; "
              f"host peak RSS {rss[('sanitise', 'backup-jobs2')]/2**20:.1f} MiB")
if ("mongo", "backup", "envsync") in runs:
    n = int(mongo_docs)
    print()
    print(f"MongoDB (SecantusDB, single-node replica set): {n:,} small documents in one collection "
          f"({mongo_size}); median of {rounds} rounds")
    print()
    print("| target | step    | plain script (s) | envsync (s) | ratio | goal  | plain (docs/s) | envsync (docs/s) | host peak RSS (MiB) |")
    print("|--------|---------|-----------------:|------------:|------:|-------|---------------:|-----------------:|--------------------:|")
    for step in ("backup", "restore"):
        p, e = st.median(runs[("mongo", step, "plain")]), st.median(runs[("mongo", step, "envsync")])
        print(f"| mongo  | {step:<7} | {p:>16.2f} | {e:>11.2f} | {e/p:>5.2f} | {goals[('mongo', step)]:<5} "
              f"| {n/p:>14,.0f} | {n/e:>16,.0f} | {rss[('mongo', step)]/2**20:>19.1f} |")
    if ("mongo", "swap", "envsync") in runs:
        swap = st.median(runs[("mongo", "swap", "envsync")])
        e = st.median(runs[("mongo", "restore", "envsync")])
        p = st.median(runs[("mongo", "restore", "plain")])
        print()
        print(f"envsync restore: {swap:.2f} s of it the swap (renameCollection, from the plugin's log); "
              f"without it {e - swap:.2f} s, {(e - swap) / p:.2f}× the plain import, {n / (e - swap):,.0f} docs/s")
    print()
    print("plain script: mongosh scripts/bench/mongo-export.js writes every collection (header line with")
    print("options and indexes, then canonical Extended JSON lines, EJSON.stringify relaxed:false) to an")
    print("uncompressed file; mongo-import.js creates each collection in a freshly dropped database,")
    print("insertMany in batches of 1,000, checks countDocuments and builds the indexes.")
    print("envsync: the mongodb plugin's mongosh does the same reads and writes; the host compresses (zstd 1)")
    print("and hashes the artifact; its restore loads shadow collections, verifies the artifact, then")
    print("renames each shadow over its live collection. SecantusDB's renameCollection copies every")
    print("document under a server-wide lock (the plugin's README: about 30 s per 100,000 documents; the")
    print("swap line above is this run's): envsync's restore pays that, MongoDB's rename changes only metadata.")
if ("search", "backup", "envsync") in runs:
    print()
    print(f"search (osmem-server, {int(search_docs):,} small documents, one index; median of {rounds}):")
    for step in ("backup", "restore"):
        secs = st.median(runs[("search", step, "envsync")])
        print(f"  {step:<7} {int(search_docs) / secs:>10,.0f} documents/s   host peak RSS {rss[('search', step)] / 2**20:.1f} MiB")
if ("parallel", "proxy-pg", "plain") in runs:
    def med(step, who):
        return st.median(runs[("parallel", step, who)])
    jobs = (1, 2, 4)
    print()
    print(f"Parallel restore (issue 17), {profile} host, median of {rounds} rounds. PostgreSQL database `par`: "
          f"{par_size} (largest: {par_tables}; secondary indexes, foreign keys, `events` partitioned in 4). "
          f"MariaDB `par`: {par_mysql_size} (3 tables, foreign keys, secondary indexes).")
    print(f"proxy: through throttle-proxy, EACH connection held to {par_rate}/s (PostgreSQL) or {par_mysql_rate}/s (MariaDB)")
    print("in each direction: a simulation of a")
    print("remote many-core server whose sessions are each bound by their own backend, not a measurement of one.")
    print()
    print("| path   | restore | seconds | × baseline | goal | host peak RSS (MiB) |")
    print("|--------|---------|--------:|-----------:|------|--------------------:|")
    def baseline(path, what, step):
        print(f"| {path} | {what} | {med(step, 'plain'):.2f} | 1.00 | baseline | — |")
    def row(path, what, step, base, goal):
        if ("parallel", step, "envsync") not in runs:
            no_flag = has_jobs != "1" and not step.endswith("-j1")
            why = "no --jobs in this build" if no_flag else "failed: see the run's stderr"
            print(f"| {path} | {what} | n/a ({why}) | | {goal} | |")
            return
        e = med(step, "envsync")
        print(f"| {path} | {what} | {e:.2f} | {e / med(base, 'plain'):.2f} | {goal} "
              f"| {rss[('parallel', step)] / 2**20:.1f} |")
    def envsync_jobs(j):
        return f"envsync `--jobs {j}`" if has_jobs == "1" or j != 1 else "envsync (one stream: no `--jobs` in this build)"
    proxy = f"proxy {par_rate}/s per connection"
    baseline(proxy, "PostgreSQL: `pg_restore` serial, custom-format file", "proxy-pg")
    for j in jobs:
        row(proxy, "PostgreSQL: " + envsync_jobs(j), f"proxy-pg-j{j}", "proxy-pg", "≤ 0.35" if j == 4 else "—")
    if ("parallel", "proxy-pg-resume", "envsync") in runs:
        # Each rerun against the full restore of its own round, whose time set the kill's.
        ratios = [e / f for f, e in zip(runs[("parallel", "proxy-pg-resume-full", "plain")],
                                        runs[("parallel", "proxy-pg-resume", "envsync")])]
        e = med("proxy-pg-resume", "envsync")
        point = open(os.path.join(os.path.dirname(path), "resume-point")).read().strip()
        each = f" (rounds: {' / '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        print(f"| {proxy} | PostgreSQL: envsync `--jobs 4` rerun after the host was SIGKILLed at 80 % of the fastest full "
              f"restore's time ({point} committed) | {e:.2f} | {st.median(ratios):.2f} of a full `--jobs 4` "
              f"restore{each} | ≤ 0.30 | {rss[('parallel', 'proxy-pg-resume')] / 2**20:.1f} |")
    if ("parallel", "direct-pg-serial", "plain") in runs:
        secs = med("direct-pg-serial", "plain")
        print(f"| direct | PostgreSQL: `pg_restore` serial, custom-format file (what the proxy costs it) | {secs:.2f} "
              f"| {secs / med('proxy-pg', 'plain'):.2f} of proxied | — | — |")
    baseline("direct", "PostgreSQL: `pg_restore -j 2`, local directory-format dump", "direct-pg")
    row("direct", "PostgreSQL: " + (envsync_jobs(2) if has_jobs == "1" else envsync_jobs(1)), "direct-pg", "direct-pg", "≤ 1.1")
    mysql_proxy = f"proxy {par_mysql_rate}/s per connection"
    baseline(mysql_proxy, "MariaDB: `mariadb < dump.sql`", "proxy-mysql")
    for j in jobs:
        row(mysql_proxy, "MariaDB: " + envsync_jobs(j), f"proxy-mysql-j{j}", "proxy-mysql", "≤ 0.35" if j == 4 else "—")
    if ("parallel", "direct-mysql-serial", "plain") in runs:
        secs = med("direct-mysql-serial", "plain")
        print(f"| direct | MariaDB: `mariadb < dump.sql` serial (the server's own work, shared by the proxied "
              f"sessions on this machine's cores) | {secs:.2f} | {secs / med('proxy-mysql', 'plain'):.2f} of proxied | — | — |")
    # Both direct PostgreSQL restores run back to back in each round: their ratio round by
    # round is less exposed to a machine whose speed drifts than the ratio of two medians.
    paired = [e / p for p, e in zip(runs.get(("parallel", "direct-pg", "plain"), []),
                                    runs.get(("parallel", "direct-pg", "envsync"), []))]
    if len(paired) > 1:
        print()
        print("direct PostgreSQL, envsync / `pg_restore -j 2` round by round: "
              + " / ".join(f"{r:.2f}" for r in paired) + f" (median {st.median(paired):.2f})")
    print()
    print("Every restore goes into a database that does not exist yet; the plain tools' times include creating it")
    print("(`createdb`, `CREATE DATABASE`) as envsync's include creating its scratch database. The row counts of")
    print("every table are checked after each (outside the timings). envsync restores from a local folder store (zstd 1), loads a scratch")
    print("database, verifies the artifact and swaps it in; the plain tools read local dumps (`pg_dump -Fc -Z1`,")
    print("`pg_dump -Fd -Z1 -j 2`, `mariadb-dump --single-transaction --quick` uncompressed). PostgreSQL's clients")
    print("run from the server's bin folder for both, not through Debian's Perl wrapper /usr/bin/psql.")
if os.path.exists(rates):
    r = [tuple(map(float, l.split())) for l in open(rates) if l.strip()]
    if r:
        print(f"sanitiser throughput (median): {st.median(x[0] for x in r):,.0f} rows/s, "
              f"{st.median(x[1] for x in r) / 2**20:.1f} MiB/s of values")
PY

# objects (issue 19): the objects plugin against `aws s3 sync` on the same 10,000 small objects
# in the same run, first run and no-change rerun, and the host's peak RSS (goals: <= 0.5x, <= 100 MiB).
# Its own servers and data: scripts/bench_objects.sh, which prints its own table.
if [[ " $targets " == *" objects "* ]]; then
  echo
  echo "objects (issue 19), $profile host:"
  HOST=$host scripts/bench_objects.sh "${OBJECTS:-10000}"
fi
