#!/usr/bin/env bash
# Runs a command with the suite's second-run engines (PostgreSQL and Garage, see
# scripts/engines.sh) started and the BERTH_TEST_* variables that point the tests at them,
# and stops them afterwards. For mutations whose rule only the scaled-out stores reach:
#   bash scripts/with-engines.sh python3 scripts/mutate.py SB1 SB2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/engines.sh
BERTH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres" \
BERTH_TEST_S3_ENDPOINT="http://127.0.0.1:$g_s3" \
  "$@"
