#!/usr/bin/env bash
# Builds the web client: hush-wasm for wasm32 (release), its JavaScript bindings with
# wasm-bindgen (`--target web`, into wasm/pkg), then copies the page and the bindings into
# server-reference/web/, which is checked in and which the relay embeds (so that
# `cargo run --release -- relay` serves the web client with no build step by hand).
# `.ci/run` runs this on a fresh clone and fails if the result differs from what is
# checked in. Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at the version of
# the wasm-bindgen crate in Cargo.lock (`.ci/run` installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Paths of this checkout and of the registry would otherwise end up in the .wasm (panic
# locations), and the build would differ from one clone to the next.
export RUSTFLAGS="--remap-path-prefix=$root=/hush --remap-path-prefix=$cargo_home=/cargo"
export CARGO_TARGET_DIR="$root/target/web"
# One code unit with link-time optimisation: about 18% smaller than the default release
# profile (docs/BENCHMARKS.md, "hush in the browser").
export CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
cargo build --release --locked -p hush-wasm --target wasm32-unknown-unknown
wasm-bindgen --target web --out-dir wasm/pkg --out-name hush_wasm --remove-name-section \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/hush_wasm.wasm"
# The npm package: wasm/pkg, with its package.json and README (`npm pack` in wasm/pkg).
cp wasm/npm/package.json wasm/npm/README.md wasm/pkg/
out=server-reference/web
mkdir -p "$out"
cp web/index.html web/app.js web/style.css web/favicon.svg "$out/"
cp wasm/pkg/hush_wasm_bg.wasm "$out/"
# The bindings import the IndexedDB module (`#[wasm_bindgen(module = "/src/idb.js")]`) from
# a snippets folder named by a hash; the relay serves it beside them as idb.js.
# Only the import statements change: the wasm module's import names keep the snippet path.
sed -E '/^import /s#\./snippets/hush-wasm-[0-9a-f]+/src/idb\.js#./idb.js#' wasm/pkg/hush_wasm.js > "$out/hush_wasm.js"
cp wasm/src/idb.js "$out/idb.js"
grep -q "from './idb.js'\|from \"./idb.js\"" "$out/hush_wasm.js" || { echo "idb.js import not found" >&2; exit 1; }
ls -l "$out"
