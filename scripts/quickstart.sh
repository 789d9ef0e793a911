#!/usr/bin/env bash
# Fresh machine → a working envsync: installs what is missing, builds the host
# and plugins, starts a throwaway PostgreSQL with sample data, backs it up into
# a local folder store, restores it into a second database and shows both.
# Everything it makes lives in .envsync/quickstart/ (removed on the next run).
# It installs only what it uses (PostgreSQL, the guest target); the test
# servers and checkers come with scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh quickstart
scripts/build.sh

source scripts/lib/pg.sh
work=$PWD/.envsync/quickstart
rm -rf "$work"
mkdir -p "$work"
pg_start "$work/pg"
trap pg_stop EXIT

echo "== throwaway PostgreSQL on 127.0.0.1:$PG_PORT, loading sample data into 'shop'"
pg_psql postgres -c "CREATE DATABASE shop"
pg_psql shop -f tests/fixtures/postgres/sample.sql >/dev/null

host=target/debug/envsync-host
conn=(--db-host 127.0.0.1 --db-port "$PG_PORT" --db-user postgres)

echo "== installed plugins"
$host plugins list

echo "== backup: shop → $work/store"
$host run --plugin postgres --op backup --database shop "${conn[@]}" --store "$work/store"
$host backups list --store "$work/store"

echo "== restore: latest backup of shop → shop_restored"
$host run --plugin postgres --op restore --database shop_restored --from-database shop "${conn[@]}" --store "$work/store"

echo "== row counts, original and restored"
count_rows() {
  pg_psql "$1" -At -c "SELECT string_agg(format('%s.%s=%s', schemaname, relname, n), ' ' ORDER BY schemaname, relname)
    FROM (SELECT schemaname, relname,
                 (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, relname), false, true, '')))[1]::text AS n
          FROM pg_stat_user_tables) t"
}
echo "shop:          $(count_rows shop)"
echo "shop_restored: $(count_rows shop_restored)"
[ "$(count_rows shop)" = "$(count_rows shop_restored)" ] && echo "== the restored copy matches"
