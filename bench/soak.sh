#!/usr/bin/env bash
# The soak (bench/soak.rs): SOAK_SECS (default 1800) of mixed traffic on two nodes over
# PostgreSQL + Garage and on the embedded default at once, then a plot of RSS, open file
# descriptors and p99 latency over time (bench/soak_plot.py, matplotlib from PyPI when missing).
#
#     bash bench/soak.sh                 # 30 minutes
#     SOAK_SECS=300 bash bench/soak.sh   # a short one
set -euo pipefail
cd "$(dirname "$0")/.."
command -v skopeo >/dev/null 2>&1 || { echo "skopeo is needed (bash scripts/test.sh installs it)" >&2; exit 1; }
cargo build --release -q --bin berth --example soak
./target/release/examples/soak
latest=$(ls -t bench/results/soak-*.json | head -1)
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
python3 bench/soak_plot.py "$latest" "${latest%.json}.png"
echo "plot: ${latest%.json}.png" >&2
