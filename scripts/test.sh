#!/usr/bin/env bash
# Runs berth's whole test suite. Installs what the tests need when it is missing (idempotent,
# quiet when everything is already there): skopeo, podman and docker-registry (CNCF
# Distribution, for the token interop test), strace (the fsync-order test), kubectl (the
# reference for pull secrets) and PostgreSQL (the scale-out backend) from Debian, the oras
# Python client from PyPI, cargo-nextest from crates.io.
#
# The suite runs twice: on the embedded default (SQLite and files), then with every test
# server on a database of its own in a PostgreSQL cluster this script starts (initdb into a
# temporary directory, a free loopback port, as the `postgres` user when run as root) and
# stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v gzip >/dev/null 2>&1 || need_apt+=(gzip)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import oras.client' >/dev/null 2>&1; then
  echo "installing oras (pip)" >&2
  python3 -m pip install -q oras
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (cargo)" >&2
  cargo install --locked -q cargo-nextest
fi

# The shared PostgreSQL cluster of the second run.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_tmp=$(mktemp -d -t berth-test-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$pg_tmp"
  as_pg=(runuser -u postgres --)
fi
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stop_pg() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" stop -m immediate -D "$pg_tmp/data" >/dev/null 2>&1 || true
  rm -rf "$pg_tmp"
}
trap stop_pg EXIT
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U postgres --no-sync -E UTF8 -D "$pg_tmp/data" >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" start -w -l "$pg_tmp/postgres.log" -D "$pg_tmp/data" \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_tmp -c max_connections=400" >/dev/null

status=0
echo "== the suite on SQLite and files" >&2
cargo nextest run --no-fail-fast "$@" || status=1
echo "== the suite on PostgreSQL" >&2
BERTH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres" \
  cargo nextest run --no-fail-fast "$@" || status=1
exit $status
