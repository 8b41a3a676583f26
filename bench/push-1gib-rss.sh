#!/usr/bin/env bash
# Measures berth's peak resident memory (VmHWM) while a 1 GiB blob is pushed, monolithic
# (POST ?digest=) and as one streamed PATCH + closing PUT, each into a fresh server.
# Usage: bash bench/push-1gib-rss.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/berth
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
head -c $((1024 * 1024 * 1024)) /dev/urandom > "$work/blob"
digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"

start() {
  rm -rf "$work/data"
  "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 2> "$work/log" &
  pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$work/log" 2>/dev/null && break; sleep 0.05; done
  base=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1)
  idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
}
report() {
  peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  awk -v n="$1" -v t="$2" -v i="$idle" -v p="$peak" 'BEGIN { printf "%-28s %6.1f s  %7.0f MB/s  idle RSS %5.1f MiB  peak RSS %5.1f MiB\n", n, t, 1073.741824 / t, i / 1024, p / 1024 }'
  kill $pid; wait $pid 2>/dev/null || true
}

start
t0=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -T "$work/blob" -H 'Content-Type: application/octet-stream' "$base/v2/bench/big/blobs/uploads?digest=$digest")
[ "$code" = 201 ] || { echo "monolithic push answered $code" >&2; exit 1; }
report "monolithic POST ?digest=" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3"

start
t0=$(date +%s%N)
loc=$(curl -s -D - -o /dev/null -X POST "$base/v2/bench/big/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
curl -s -o /dev/null -X PATCH -T "$work/blob" -H 'Content-Type: application/octet-stream' "$base$loc"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$base$loc?digest=$digest")
[ "$code" = 201 ] || { echo "chunked push answered $code" >&2; exit 1; }
report "streamed PATCH + PUT" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3"
