#!/usr/bin/env bash
# Builds envsync-host and every first-party plugin.
#   scripts/build.sh            debug host (target/debug/envsync-host)
#   scripts/build.sh --release  release host (target/release/envsync-host)
# Plugins are always optimised; engine plugins land in
# target/plugins/<name>.wasm, sanitisers in target/plugins/sanitisers/<name>.wasm
# (the folder decides the role, the file name the name: docs/plugins.md),
# test fixtures in target/test-plugins/.
set -euo pipefail
cd "$(dirname "$0")/.."

host_profile=dev
[ "${1:-}" = "--release" ] && host_profile=release

# First-party plugins: every folder in plugins/ except the SDK.
plugins=()
for dir in plugins/*/; do
  name=$(basename "$dir")
  [ "$name" = sdk ] && continue
  plugins+=("$name")
done
# First-party plugins that are sanitisers, not engines.
sanitisers=(sanitise)
fixtures=(sandbox-probe future-contract hostile-sanitiser hostile-engine)

pkg_args=()
for p in "${plugins[@]}"; do pkg_args+=(-p "envsync-$p"); done
for f in "${fixtures[@]}"; do pkg_args+=(-p "$f"); done
cargo build --target wasm32-wasip2 --profile wasm "${pkg_args[@]}"

mkdir -p target/plugins/sanitisers target/test-plugins
for p in "${plugins[@]}"; do
  folder=target/plugins
  if [[ " ${sanitisers[*]} " == *" $p "* ]]; then
    folder=target/plugins/sanitisers
    # Built before sanitisers had their folder: in the engine folder it is refused.
    rm -f "target/plugins/$p.wasm"
  fi
  cp "target/wasm32-wasip2/wasm/envsync_${p//-/_}.wasm" "$folder/$p.wasm"
done
for f in "${fixtures[@]}"; do
  cp "target/wasm32-wasip2/wasm/${f//-/_}.wasm" "target/test-plugins/$f.wasm"
done

cargo build --profile "$host_profile" -p envsync-host
echo "built: host ($host_profile), plugins: ${plugins[*]} → target/plugins/ (sanitisers: ${sanitisers[*]} → target/plugins/sanitisers/)"
