#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds the
# host and plugins, checks formatting and lints, runs unit and end-to-end
# tests against real servers started on 127.0.0.1 by the harness.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh

cargo fmt --all --check
cargo clippy -p envsync-host -p envsync-tests --all-targets -- -D warnings
cargo clippy --target wasm32-wasip2 --profile wasm -p envsync-plugin-sdk -p envsync-postgres -p envsync-mysql -p envsync-sqlite -p envsync-elasticsearch -p envsync-sanitise -p envsync-mongodb -p envsync-objects -p sandbox-probe -p future-contract -p hostile-sanitiser -p hostile-engine -- -D warnings

# Unit tests (host, and plugin logic that runs natively), then end to end.
cargo test -p envsync-host -p envsync-plugin-sdk -p envsync-postgres -p envsync-mysql -p envsync-sqlite -p envsync-elasticsearch -p envsync-sanitise -p envsync-mongodb -p envsync-objects
# cargo-nextest (when installed) runs the suites' tests side by side across
# suites (.config/nextest.toml), so one long test no longer holds back the
# rest of its suite; plain cargo test runs one suite at a time.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p envsync-tests
else
  cargo test -p envsync-tests -- --test-threads 2
fi
