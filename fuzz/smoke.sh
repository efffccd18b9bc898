#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: bash fuzz/smoke.sh [SECONDS_PER_TARGET] [TARGET...]
# New inputs go to a scratch directory; the checked-in corpora are read, never written.
# Prints the executions per target; exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-15}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(session_message prekey_bundle header group_wire sealed_state state_bytes session_interaction group_interaction relay_frame client_payload)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t ok, $execs executions in ${seconds}s"
done
