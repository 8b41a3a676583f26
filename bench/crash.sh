#!/usr/bin/env bash
# kill -9 at random moments of a mixed workload (image pushes, chunked uploads, tag deletions,
# robot creations), CYCLES times (default 50) on each backend: the embedded default, then
# PostgreSQL + Garage (engines started by the README's test command). After every restart each
# acknowledged write of every cycle must be readable and nothing partial visible; garbage
# collection at the end must remove exactly the blobs no stored manifest references. The suite
# runs the same test with 5 cycles. BERTH_CRASH_SEED=N replays a schedule.
#
#     bash bench/crash.sh          # 50 cycles on each backend
#     CYCLES=200 bash bench/crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH_CRASH_CYCLES="${CYCLES:-50}" exec bash scripts/test.sh --no-capture \
  kill9_at_random_moments_of_a_mixed_workload_cycle_after_cycle
