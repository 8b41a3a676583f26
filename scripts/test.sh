#!/usr/bin/env bash
# Runs berth's whole test suite. Installs what the tests need when it is missing (idempotent,
# quiet when everything is already there): skopeo, podman and docker-registry (CNCF
# Distribution, for the token interop test), strace (the fsync-order test), kubectl (the
# reference for pull secrets), PostgreSQL (the scale-out backend), chromium and Node.js (the
# console's browser test) from Debian, the oras Python client from PyPI, playwright-core from
# npm (tests/console, pinned by its lock file), oidc-provider from npm (tests/oidc, the single
# sign-on tests' OpenID provider, pinned by its lock file), schemathesis from PyPI (the API
# fuzzing), cargo-nextest and cargo-deny from
# crates.io, e2fsprogs (the fault tests' ext4 that turns read-only). The fault tests mount a
# tmpfs and a loop device, so the suite runs as root, as CI does. The fuzz targets' corpora are
# replayed by the suite itself (tests/it/fuzz_corpus.rs).
#
# The suite runs twice: on the embedded default (SQLite and files), then with every test
# server on a database of its own in a PostgreSQL cluster and a prefix of its own in a Garage
# bucket (S3), both started here and stopped at the end: PostgreSQL by initdb into a
# temporary directory on a free loopback port (as the `postgres` user when run as root),
# Garage (installed with cargo when missing) as one node on loopback with replication
# factor 1, its key and bucket made with its CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v gzip >/dev/null 2>&1 || need_apt+=(gzip)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# schemathesis (PyPI) fuzzes the management API against its OpenAPI document (tests/it/api_fuzz.rs).
if ! command -v st >/dev/null 2>&1 || ! st --version 2>/dev/null | grep -q '4\.32\.'; then
  echo "installing schemathesis (pip)" >&2
  python3 -m pip install -q 'schemathesis==4.32.5'
fi
if ! python3 -c 'import oras.client' >/dev/null 2>&1; then
  echo "installing oras (pip)" >&2
  python3 -m pip install -q oras
fi
# Playwright's driver (no browsers: the console test uses Debian's chromium), pinned by the lock file.
if [ ! -f tests/console/node_modules/playwright-core/package.json ]; then
  echo "installing playwright-core (npm)" >&2
  (cd tests/console && npm ci --silent --no-audit --no-fund >/dev/null)
fi
# A real OpenID provider for the single sign-on tests (oidc-provider), pinned by its lock file.
if [ ! -f tests/oidc/node_modules/oidc-provider/package.json ]; then
  echo "installing oidc-provider (npm)" >&2
  (cd tests/oidc && npm ci --silent --no-audit --no-fund >/dev/null)
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (cargo)" >&2
  cargo install --locked -q cargo-nextest
fi
if ! command -v garage >/dev/null 2>&1; then
  echo "installing garage (cargo; about ten minutes, once per machine)" >&2
  cargo install --locked -q garage
fi

if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny (cargo)" >&2
  cargo install --locked -q cargo-deny
fi

# Formatting and lints first: they take seconds and keep every diff about substance.
echo "== cargo fmt --check and cargo clippy -D warnings" >&2
cargo fmt --check
cargo clippy -q --all-targets -- -D warnings

# Supply chain (deny.toml): licenses, duplicate versions, sources, and the RustSec advisories of
# the snapshot in ../shared/advisory-db (the machines cannot fetch the database), given to
# cargo-deny as the git repository it expects.
echo "== cargo deny check" >&2
# cargo-deny reads every target's crates offline; a fresh machine has fetched only its own.
cargo fetch -q
advisory_src=../shared/advisory-db
if [ -d "$advisory_src" ]; then
  advisory_db=target/deny/advisory-dbs/advisory-db-3157b0e258782691
  stamp=$(cat ../shared/advisory-db.SNAPSHOT 2>/dev/null | head -2 | sha256sum | cut -c1-16)
  if [ ! -f "$advisory_db/.snapshot-$stamp" ]; then
    rm -rf "$advisory_db"
    mkdir -p "$(dirname "$advisory_db")"
    cp -r "$advisory_src" "$advisory_db"
    git -C "$advisory_db" init -q
    git -C "$advisory_db" add -A
    git -C "$advisory_db" -c user.name=berth -c user.email=berth@localhost commit -qm snapshot
    touch "$advisory_db/.snapshot-$stamp"
  fi
  cargo deny --offline --log-level error check
else
  echo "notice: $advisory_src is absent: advisories are not checked (licenses, bans and sources are)" >&2
  cargo deny --offline --log-level error check bans licenses sources
fi

# The engines of the second run (PostgreSQL and Garage), stopped when this script exits.
source scripts/engines.sh

status=0
echo "== the suite on SQLite and files" >&2
BERTH_TEST_PASS=embedded cargo nextest run --no-fail-fast "$@" || status=1
echo "== the suite on PostgreSQL and S3 (Garage)" >&2
BERTH_TEST_PASS=scaled \
BERTH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres" \
BERTH_TEST_S3_ENDPOINT="http://127.0.0.1:$g_s3" \
  cargo nextest run --no-fail-fast "$@" || status=1

# Every fuzz target runs for a bounded time from its committed corpus (the suite has replayed the
# corpora already): an unoptimized build without ASan, which builds in minutes. BERTH_FUZZ_SECONDS
# sets the time per target (0 skips; a run limited to some tests skips it too).
fuzz_seconds=${BERTH_FUZZ_SECONDS:-5}
if [ "$fuzz_seconds" != 0 ] && [ $# -eq 0 ]; then
  echo "== fuzzing: every target for ${fuzz_seconds}s" >&2
  FUZZ_QUICK=1 bash scripts/fuzz.sh "$fuzz_seconds" || status=1
fi
exit $status
