#!/usr/bin/env bash
# Token issuance with robot-token Basic auth, and manifest GET anonymous (public namespace)
# versus bearer-authorized, against a release build. Needs wrk, curl and python3.
# Usage: bash bench/auth-throughput.sh   (builds the release binary first)
# Numbers are requests/s from wrk on the same 2-core machine as the server: conservative.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
BERTH_ADMIN_PASSWORD=bench-admin-pw target/release/berth serve --data-dir "$work/data" --listen 127.0.0.1:0 --log warn,berth=info 2> "$work/log" &
for _ in $(seq 100); do grep -q 'listening on' "$work/log" 2>/dev/null && break; sleep 0.05; done
base=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1)
api="$base/api/v1"
json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }
curl -sf -u admin:bench-admin-pw "$api/orgs" -d '{"name":"acme"}' > /dev/null
curl -sf -u admin:bench-admin-pw "$api/orgs/acme/robots" -d '{"name":"bench"}' > /dev/null
curl -sf -u admin:bench-admin-pw -X PUT "$api/orgs/acme/bindings/bench" -d '{"role":"Reader","subject":"robot/bench"}' > /dev/null
tok=$(curl -sf -u admin:bench-admin-pw "$api/orgs/acme/robots/bench/tokens" -d '{"name":"t"}')
basic=$(printf '%s:%s' "$(echo "$tok" | json "['accessId']")" "$(echo "$tok" | json "['token']")" | base64 -w0)
# A small image to GET.
printf '{}' > "$work/cfg"; cd_=$(sha256sum "$work/cfg" | cut -d' ' -f1)
curl -sf -u admin:bench-admin-pw -X POST --data-binary @"$work/cfg" "$base/v2/acme/app/blobs/uploads/?digest=sha256:$cd_" > /dev/null
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":2},"layers":[]}' "$cd_" > "$work/m"
curl -sf -u admin:bench-admin-pw -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$work/m" "$base/v2/acme/app/manifests/v1" > /dev/null
curl -sf -u admin:bench-admin-pw -X PATCH "$api/namespaces/acme" -d '{"public":true}' > /dev/null
bearer=$(curl -sf -H "Authorization: Basic $basic" "$base/token?service=berth&scope=repository:acme/app:pull" | json "['token']")

rate() { wrk -t2 -c"$1" -d"$2" "${@:3}" | awk '/Requests\/sec/ {print $2}'; }
echo "token issuance (robot token, Basic):   $(rate 32 5s -H "Authorization: Basic $basic" "$base/token?service=berth&scope=repository:acme/app:pull") tokens/s"
anon=$(rate 64 5s "$base/v2/acme/app/manifests/v1")
auth=$(rate 64 5s -H "Authorization: Bearer $bearer" "$base/v2/acme/app/manifests/v1")
echo "manifest GET anonymous (public):       $anon req/s"
echo "manifest GET bearer-authorized:        $auth req/s  ($(python3 -c "print(f'{100*$auth/$anon:.0f}')")% of anonymous)"
