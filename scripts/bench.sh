#!/usr/bin/env bash
# Benchmark: envsync against the plain tools on the same data, in the same run.
#   scripts/bench.sh [SCALE]        pgbench scale, default 50 (about 750 MB)
#   ROUNDS=3 scripts/bench.sh       rounds per measurement (median is shown)
#   TARGETS="local s3 mysql sanitise search mongo"  what to measure (default: all but mongo, which
#                                   takes ~17 minutes at its default size): PostgreSQL
#                                   to a local folder and to S3, MySQL/MariaDB to a folder, a
#                                   sanitised PostgreSQL backup against an unsanitised one, an
#                                   OpenSearch-API index (osmem-server) dumped and restored, and
#                                   a MongoDB database (SecantusDB) against plain mongosh scripts
#   SEARCH_DOCS=1000000             documents of the search benchmark
#   MYSQL_ROWS=1500000              rows of the MariaDB benchmark table (~240 MB)
#   MONGO_DOCS=1000000              documents of the MongoDB benchmark (one collection)
#   NO_BUILD=1                      use the release host and plugins already built
#                                   (target/release, target/plugins) instead of building them
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

scripts/setup.sh >/dev/null
[ "${NO_BUILD:-0}" = 1 ] || scripts/build.sh --release >/dev/null
host=$PWD/target/release/envsync-host
if [[ " $targets " == *" s3 "* ]] && ! command -v aws >/dev/null; then
  pip install -q awscli # the baseline's S3 client
fi

source scripts/lib/pg.sh
source scripts/lib/mariadb.sh
work=$PWD/.envsync/bench
rm -rf "$work"; mkdir -p "$work"
pg_start "$work/pg"
s3_pid=
search_pid=
mongo_pid=
cleanup() {
  [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null
  [ -n "$search_pid" ] && kill "$search_pid" 2>/dev/null && wait "$search_pid" 2>/dev/null
  [ -n "$mongo_pid" ] && kill "$mongo_pid" 2>/dev/null && wait "$mongo_pid" 2>/dev/null
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

for round in $(seq 1 "$rounds"); do
  echo "round $round ..." >&2
  for target in $targets; do
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
        for task in plain masked; do
          extra=""
          [ "$task" = masked ] && extra='[task.sanitise]
sanitiser = "sanitise"
rules = "rules.toml"
salt_file = "salt.key"
strict = true'
          cat >> "$work/sanitise/env.toml" <<TOML
$( [ "$task" = plain ] && printf '[environment]\nname = "bench"\nstore = "%s"\nstate_dir = "state"\n' "$work/sanitise-store" )
[[task]]
name = "$task"
plugin = "postgres"
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
  "$mongo_docs" "${mongo_size:-}" <<'PY'
import os, sys, statistics as st, collections
scale, size, rounds, path, mysql_size, rates, search_docs, mongo_docs, mongo_size = sys.argv[1:10]
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
if os.path.exists(rates):
    r = [tuple(map(float, l.split())) for l in open(rates) if l.strip()]
    if r:
        print(f"sanitiser throughput (median): {st.median(x[0] for x in r):,.0f} rows/s, "
              f"{st.median(x[1] for x in r) / 2**20:.1f} MiB/s of values")
PY
