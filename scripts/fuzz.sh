#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers that read bytes from outside.
# Needs the nightly toolchain and cargo-fuzz (installed here when missing). Runs every target of
# fuzz/ (or those named) for SECONDS each (default 60) from its committed corpus; new inputs go
# to a scratch directory, and with FUZZ_KEEP=1 the ones that add coverage are merged into
# fuzz/corpus/TARGET. A crash, a wrong answer of a target's oracle, a hang over 1 s or an
# out-of-memory leaves its input in fuzz/artifacts/TARGET/ and fails the run.
#
#     bash scripts/fuzz.sh                       # every target, 60 s each, optimized with ASan
#     bash scripts/fuzz.sh 600 glob              # one target, 10 minutes
#     FUZZ_RUNS=10000000 bash scripts/fuzz.sh 0 jwt   # a number of executions instead of a time
#     FUZZ_QUICK=1 bash scripts/fuzz.sh 5        # what the test command runs: an unoptimized
#                                                # build without ASan (builds in a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >/dev/null
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked -q cargo-fuzz
if [ -n "${FUZZ_QUICK:-}" ]; then
  build=(--dev -s none)
  bin=target/x86_64-unknown-linux-gnu/debug
else
  build=(-O)
  bin=target/x86_64-unknown-linux-gnu/release
fi
cargo +nightly fuzz build "${build[@]}" >/dev/null 2>&1 || cargo +nightly fuzz build "${build[@]}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
scratch=$(mktemp -d -t berth-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
limit=(-max_total_time="$seconds")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t" "$scratch/$t"
  out="$scratch/$t.log"
  if ! "$bin/$t" "${limit[@]}" -timeout=1 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" "$scratch/$t" "corpus/$t" >"$out" 2>&1; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$out" >&2 || tail -20 "$out" >&2
    echo "fuzz target $t failed: its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$out" | grep -oE '[0-9]+$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$out" | tail -1 | grep -oE '[0-9]+' || echo '?')
  echo "fuzz $t: $runs executions, coverage $cov edges, no finding" >&2
  if [ -n "${FUZZ_KEEP:-}" ]; then
    "$bin/$t" -merge=1 "corpus/$t" "$scratch/$t" >/dev/null 2>&1
  fi
done
