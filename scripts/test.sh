#!/usr/bin/env bash
# Runs berth's whole test suite. Installs what the tests need when it is missing (idempotent,
# quiet when everything is already there): skopeo, podman and docker-registry (CNCF
# Distribution, for the token interop test), strace (the fsync-order test) and kubectl (the
# reference for pull secrets) from Debian, the oras Python
# client from PyPI, cargo-nextest from crates.io.
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

cargo nextest run --no-fail-fast "$@"
