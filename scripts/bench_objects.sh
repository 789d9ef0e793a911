#!/usr/bin/env bash
# Benchmark of the objects plugin against `aws s3 sync` on the same data, in
# the same run (issue 19): N small objects (default 10,000) on an s3s-fs
# server, copied into a second bucket of the same server (both tools copy
# server-side) — first run and no-change rerun — and across two servers with
# their own keys (envsync only: `aws s3 sync` cannot read with one endpoint
# and key and write with another). Then the same first run and no-change rerun
# within one moto server (`moto_server`, an in-memory S3 emulator): s3s-fs
# lists no ETags, so envsync's host remembers them in its state folder (the
# first run HEADs each source once); moto lists them as AWS, MinIO and Ceph
# do. Both reruns are listing-only. Prints
# seconds, the host's peak RSS and envsync's time as a ratio of aws s3 sync's
# (goal <= 0.5). scripts/bench.sh runs it as TARGETS=objects.
#   scripts/bench_objects.sh [N]
#   HOST=target/release/envsync-host   the host to measure (default: release if built, else debug)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
host=${HOST:-target/release/envsync-host}
[ -x "$host" ] || host=target/debug/envsync-host
command -v aws >/dev/null || pip install -q awscli
command -v moto_server >/dev/null || pip install -q 'moto[server]==5.2.1'
work=$(mktemp -d); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # NAME → sets ${NAME}_port, key AK<NAME>, secret SK<NAME>secret
  local p; p=$(port); mkdir -p "$work/$1"
  ~/.cargo/bin/s3s-fs --host 127.0.0.1 --port "$p" --access-key "AK$1" --secret-key "SK$1secret" "$work/$1" \
    >"$work/$1.log" 2>&1 &
  pids+=($!); printf -v "${1}_port" %s "$p"; echo "SK$1secret" > "$work/$1.secret"
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return; sleep 0.1; done
}
start a; start b
# moto keeps objects in memory and takes any keys; it starts in a few seconds.
start_moto() { # NAME
  local p; p=$(port)
  moto_server -H 127.0.0.1 -p "$p" >"$work/$1.log" 2>&1 &
  pids+=($!); printf -v "${1}_port" %s "$p"; echo "SK$1secret" > "$work/$1.secret"
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return; sleep 0.1; done
  echo "moto_server did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}
start_moto m
mkdir -p "$work/a/src/uploads" "$work/a/dst-envsync" "$work/a/dst-aws" "$work/b/dst"
python3 - "$work/a/src/uploads" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:06d}.txt"), "w") as f:
        f.write(f"object {i}\n" * (1 + i % 50))
PY
rss_run() { # command… → prints "SECONDS MAX_RSS_KIB"
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/time"
}
copy() { # TARGET_SERVER TARGET_BUCKET [MORE FLAGS]; SRC=SERVER for another source than a
  local tp=${1}_port server=$1 bucket=$2 source=${SRC:-a}; shift 2
  local sp=${source}_port
  rss_run env -i PATH="$PATH" HOME="$work" ENVSYNC_STATE_DIR="$work/state" "$host" --plugin-dir target/plugins \
    run --plugin objects --op copy \
    --source-database src/uploads --source-host "http://127.0.0.1:${!sp}" --source-user "AK$source" \
    --source-password-file "$work/$source.secret" \
    --database "$bucket/uploads" --db-host "http://127.0.0.1:${!tp}" --db-user "AK$server" \
    --db-password-file "$work/$server.secret" "$@"
}
aws_at() { # SERVER AWS-ARGS… (untimed)
  local p=${1}_port s=$1; shift
  env AWS_ACCESS_KEY_ID="AK$s" AWS_SECRET_ACCESS_KEY="SK${s}secret" AWS_DEFAULT_REGION=us-east-1 \
    aws --endpoint-url "http://127.0.0.1:${!p}" "$@"
}
awsync() { # [SERVER, default a]
  local s=${1:-a}; local p=${s}_port
  rss_run env AWS_ACCESS_KEY_ID="AK$s" AWS_SECRET_ACCESS_KEY="SK${s}secret" AWS_DEFAULT_REGION=us-east-1 \
    aws --endpoint-url "http://127.0.0.1:${!p}" s3 sync --only-show-errors s3://src/uploads s3://dst-aws/uploads
}
echo "objects: $n, host: $host"
# Compile the plugin into the run's cache first: the first timed run then
# measures the copy, not a one-off Cranelift compile (about 27 s and 125 MiB
# peak with a debug host; every later run loads the cached component).
env -i PATH="$PATH" HOME="$work" "$host" --plugin-dir target/plugins plugins inspect objects >/dev/null
ratio() { python3 -c "import sys; e, a = float(sys.argv[1]), float(sys.argv[2]); print(f'{e / a:.2f}')" "$1" "$2"; }
line() { # LABEL ENVSYNC_OUT AWS_OUT
  read -r es er <<<"$2"; read -r as ar <<<"$3"
  printf '%-32s envsync %7.2f s %6.1f MiB   aws s3 sync %7.2f s %6.1f MiB   ratio %s (goal <= 0.50)\n' \
    "$1" "$es" "$(python3 -c "print($er / 1024)")" "$as" "$(python3 -c "print($ar / 1024)")" "$(ratio "$es" "$as")"
}
line "within one server, first run:" "$(copy a dst-envsync)" "$(awsync)"
line "within one server, no change:" "$(copy a dst-envsync)" "$(awsync)"
# s3s-fs lists no ETags: by default envsync compares the ETags its host remembers from the first
# run (HEADs where it has none); `verify=false` takes aws s3 sync's rule instead (equal size,
# target newer).
line "no change, verify=false:" "$(copy a dst-envsync --param verify=false)" "$(awsync)"
# Both tools must end with the same objects (outside the timings).
diff <(cd "$work/a/dst-envsync" && find . -type f ! -path './.*' -exec md5sum {} + | sort -k2) \
     <(cd "$work/a/dst-aws" && find . -type f ! -path './.*' -exec md5sum {} + | sort -k2) >/dev/null \
  || { echo "envsync's and aws s3 sync's copies differ" >&2; exit 1; }
read -r s r <<<"$(copy b dst)"; printf '%-32s envsync %7.2f s %6.1f MiB\n' "across two servers, first run:" "$s" "$(python3 -c "print($r / 1024)")"
read -r s r <<<"$(copy b dst)"; printf '%-32s envsync %7.2f s %6.1f MiB\n' "across two servers, no change:" "$s" "$(python3 -c "print($r / 1024)")"
read -r s r <<<"$(copy b dst --param verify=false)"; printf '%-32s envsync %7.2f s %6.1f MiB\n' "two servers, no change, verify=false:" "$s" "$(python3 -c "print($r / 1024)")"

# moto: the same objects uploaded into it (untimed), then the same two rows.
for b in src dst-envsync dst-aws; do aws_at m s3 mb "s3://$b" >/dev/null; done
aws_at m s3 sync --only-show-errors "$work/a/src/uploads" s3://src/uploads
listed() { aws_at m s3api list-objects-v2 --bucket "$1" --prefix uploads/ --query 'Contents[].[Key,Size,ETag]' --output text; }
[ "$(listed src | grep -c '"[0-9a-f]\{32\}"')" = "$n" ] || { echo "moto did not list an ETag for every object" >&2; exit 1; }
line "moto (lists ETags), first run:" "$(SRC=m copy m dst-envsync)" "$(awsync m)"
line "moto, no change:" "$(SRC=m copy m dst-envsync)" "$(awsync m)"
# Same bytes: every object here is one part, so its ETag is its MD5.
diff <(listed dst-envsync) <(listed dst-aws) >/dev/null && diff <(listed src) <(listed dst-aws) >/dev/null \
  || { echo "on moto, envsync's and aws s3 sync's copies differ" >&2; exit 1; }
