#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers that read bytes from outside.
# Needs the nightly toolchain and cargo-fuzz (installed here when missing). Runs every target of
# fuzz/ for SECONDS each (default 60) on its committed corpus, which it then minimizes; a crash,
# a hang over 1 s or an out-of-memory leaves its input in fuzz/artifacts/TARGET/ and fails.
#
#     bash scripts/fuzz.sh            # every target, 60 s each
#     bash scripts/fuzz.sh 600 glob   # one target, 10 minutes
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked -q cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
  echo "== $t (${seconds}s)" >&2
  cargo +nightly fuzz run -O "$t" -- -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 2>&1 \
    | grep -E '^(Done|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY' || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz target $t failed: see fuzz/artifacts/$t" >&2; exit 1; }
  cargo +nightly fuzz cmin -O "$t" >/dev/null 2>&1
done
