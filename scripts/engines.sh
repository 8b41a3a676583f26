# Sourced by scripts/test.sh and scripts/with-engines.sh (bash, with `set -euo pipefail`): starts
# the engines of the suite's second run, one PostgreSQL cluster and one Garage, in a temporary
# directory, and stops them when the sourcing shell exits. Sets pg_port and g_s3; expects
# PostgreSQL and Garage installed (scripts/test.sh installs them).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The engines of the second run: one PostgreSQL cluster and one Garage, in a temporary directory.
engines=$(mktemp -d -t berth-test-engines.XXXXXX)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chmod 755 "$engines"   # the postgres user must reach its directory inside
  mkdir "$engines/pg"
  chown postgres:postgres "$engines/pg"
  as_pg=(runuser -u postgres --)
fi
garage_pid=""
stop_engines() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" stop -m immediate -D "$engines/pg/data" >/dev/null 2>&1 || true
  if [ -n "$garage_pid" ]; then kill "$garage_pid" 2>/dev/null || true; fi
  rm -rf "$engines"
}
trap stop_engines EXIT

pg_port=$(free_port)
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U postgres --no-sync -E UTF8 -D "$engines/pg/data" >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" start -w -l "$engines/pg/postgres.log" -D "$engines/pg/data" \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $engines/pg -c max_connections=400" >/dev/null

g_rpc=$(free_port)
g_s3=$(free_port)
g_admin=$(free_port)
mkdir -p "$engines/garage"
cat > "$engines/garage/garage.toml" <<EOF
metadata_dir = "$engines/garage/meta"
data_dir = "$engines/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$g_rpc"
rpc_public_addr = "127.0.0.1:$g_rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$g_s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$g_admin"
EOF
g() { garage -c "$engines/garage/garage.toml" "$@"; }
garage -c "$engines/garage/garage.toml" server >"$engines/garage/log" 2>&1 &
garage_pid=$!
for _ in $(seq 150); do g status >/dev/null 2>&1 && break; sleep 0.2; done
node=$(g status 2>/dev/null | awk -v a="127.0.0.1:$g_rpc" 'index($0, a) {print $1; exit}')
g layout assign -z dc1 -c 1G "$node" >/dev/null
g layout apply --version 1 >/dev/null
# The access key the tests know (tests/it/support/engines.rs).
g key import --yes GK0123456789abcdef01234567 \
  0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef -n berth >/dev/null
g bucket create berth >/dev/null
g bucket allow --read --write --owner berth --key berth >/dev/null

