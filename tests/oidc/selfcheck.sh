#!/usr/bin/env bash
# Checks provider.mjs and signin.mjs against each other with curl: discovery,
# code flow with PKCE, claims in the ID token, code reuse, refresh (rotation,
# group changes, disabled / deleted users), revocation, device flow, wrong
# passwords. Starts and stops its own provider; exits non-zero on any failure.
#
#   bash tests/oidc/selfcheck.sh      (after `npm ci` in tests/oidc)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
[ -d node_modules/oidc-provider ] || npm ci --silent --no-audit --no-fund

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
die() { echo "FAIL $*"; echo "--- provider log"; cat "$work/provider.err" || true; exit 1; }

# js EXPR ARGS...: evaluates EXPR with a = process.argv.slice(1) and helpers
# jwt(token) -> payload, hdr(token) -> header, J(s) -> JSON.parse(s).
js() {
  local expr=$1; shift
  node -e '
    const a = process.argv.slice(1);
    const J = (s) => JSON.parse(s);
    const jwt = (t) => JSON.parse(Buffer.from(t.split(".")[1], "base64url"));
    const hdr = (t) => JSON.parse(Buffer.from(t.split(".")[0], "base64url"));
    const r = ('"$expr"');
    if (r === false) process.exit(1);
    if (r !== true && r !== undefined) console.log(typeof r === "string" ? r : JSON.stringify(r));
  ' -- "$@"
}

cat > "$work/config.json" <<'EOF'
{
  "port": 0,
  "clients": [{
    "client_id": "berth",
    "client_secret": "berth-secret",
    "redirect_uris": ["http://127.0.0.1:9/cb"],
    "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
    "token_endpoint_auth_method": "client_secret_basic"
  }, {
    "client_id": "berth-post",
    "client_secret": "berth-post-secret",
    "redirect_uris": ["http://127.0.0.1:9/cb"],
    "grant_types": ["authorization_code", "refresh_token"],
    "token_endpoint_auth_method": "client_secret_post"
  }],
  "users": {
    "alice": {"password": "pw-alice", "email": "alice@example.com", "name": "Alice", "groups": ["dev", "ops"]},
    "carol": {"password": "pw-carol", "email": "carol@example.com", "name": "Carol", "groups": ["qa"]}
  },
  "device_flow": true,
  "id_token_ttl": 300,
  "access_token_ttl": 300
}
EOF

node provider.mjs "$work/config.json" > "$work/provider.out" 2> "$work/provider.err" &
pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/provider.out" ] && break
  kill -0 "$pid" 2>/dev/null || die "provider exited early"
  sleep 0.1
done
[ "$(wc -l < "$work/provider.out")" -eq 1 ] || die "provider printed no issuer line"
issuer=$(js 'J(a[0]).issuer' "$(cat "$work/provider.out")")
echo "issuer $issuer"
check "issuer is http://127.0.0.1:PORT" js '/^http:\/\/127\.0\.0\.1:\d+$/.test(a[0])' "$issuer"

# ---- discovery ---------------------------------------------------------------
disc=$(curl -sf "$issuer/.well-known/openid-configuration") || die "no discovery document"
check "discovery issuer" js 'J(a[0]).issuer === a[1]' "$disc" "$issuer"
check "discovery endpoints" js '(() => { const d = J(a[0]); return d.authorization_endpoint === a[1] + "/auth" && d.token_endpoint === a[1] + "/token" && d.jwks_uri === a[1] + "/jwks" && d.userinfo_endpoint === a[1] + "/me" && d.device_authorization_endpoint === a[1] + "/device/auth" && d.revocation_endpoint === a[1] + "/token/revocation"; })()' "$disc" "$issuer"
check "discovery code_challenge_methods_supported = [S256]" js 'JSON.stringify(J(a[0]).code_challenge_methods_supported) === "[\"S256\"]"' "$disc"
check "discovery scopes" js '["openid","profile","email","groups","offline_access"].every((s) => J(a[0]).scopes_supported.includes(s))' "$disc"
check "discovery auth methods basic+post" js '["client_secret_basic","client_secret_post"].every((s) => J(a[0]).token_endpoint_auth_methods_supported.includes(s))' "$disc"
jwks=$(curl -sf "$issuer/jwks")
check "jwks has RS256 and ES256 public keys only" js '(() => { const k = J(a[0]).keys; return k.some((x) => x.alg === "RS256" && x.kty === "RSA") && k.some((x) => x.alg === "ES256" && x.crv === "P-256") && k.every((x) => !x.d); })()' "$jwks"

# ---- helpers -------------------------------------------------------------------
tok() { curl -s -u berth:berth-secret "$issuer/token" "$@"; }
verifier() { node -e 'console.log(require("node:crypto").randomBytes(32).toString("base64url"))'; }
challenge() { node -e 'console.log(require("node:crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' -- "$1"; }
# auth_url CLIENT VERIFIER STATE NONCE [EXTRA]
auth_url() {
  echo "$issuer/auth?response_type=code&client_id=$1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=openid%20profile%20email%20groups%20offline_access&state=$3&nonce=$4&code_challenge=$(challenge "$2")&code_challenge_method=S256${5:-}"
}
param() { js 'new URL(a[0]).searchParams.get(a[1]) ?? ""' "$1" "$2"; }
# login USER PASSWORD -> sets $tokens (token response JSON) via the code flow
login() {
  local v cb code
  v=$(verifier)
  cb=$(node signin.mjs code "$(auth_url berth "$v" s-$1 n-$1)" "$1" "$2") || return 1
  code=$(param "$cb" code)
  tokens=$(tok -d grant_type=authorization_code -d "code=$code" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v")
}
refresh() { tok -d grant_type=refresh_token -d "refresh_token=$1"; }
field() { js 'J(a[0])[a[1]] ?? ""' "$1" "$2"; }
user() { curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$2" "$issuer/test/users/$1"; }

# ---- the login page (what a browser sees) ----------------------------------------
loc=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$work/jar" "$(auth_url berth "$(verifier)" s n)")
check "authorization redirects to /interaction/UID" js 'new URL(a[0]).pathname.startsWith("/interaction/")' "$loc"
html=$(curl -s -b "$work/jar" "$loc")
check "login page has the login and password fields" js '/name="login"/.test(a[0]) && /name="password"/.test(a[0]) && /<form[^>]*method="post"/.test(a[0])' "$html"
check "login page loads nothing from outside" js '!/https?:\/\//.test(a[0])' "$html"

# ---- code flow -------------------------------------------------------------------
v=$(verifier)
cb=$(node signin.mjs code "$(auth_url berth "$v" st-1 nonce-1)" alice pw-alice) || die "signin.mjs code failed"
echo "callback $cb"
check "callback goes to the redirect_uri" js 'a[0].startsWith("http://127.0.0.1:9/cb?")' "$cb"
check "callback has code, state and iss" js '(() => { const u = new URL(a[0]).searchParams; return !!u.get("code") && u.get("state") === "st-1" && u.get("iss") === a[1]; })()' "$cb" "$issuer"
code=$(param "$cb" code)
tokens=$(tok -d grant_type=authorization_code -d "code=$code" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v")
idt=$(field "$tokens" id_token)
[ -n "$idt" ] || die "no id_token: $tokens"
echo "id_token $(js 'jwt(a[0])' "$idt")"
check "id_token RS256" js 'hdr(a[0]).alg === "RS256" && !!hdr(a[0]).kid' "$idt"
check "id_token sub, aud, iss, nonce" js '(() => { const c = jwt(a[0]); return c.sub === "alice" && c.aud === "berth" && c.iss === a[1] && c.nonce === "nonce-1"; })()' "$idt" "$issuer"
check "id_token groups, preferred_username, email, name" js '(() => { const c = jwt(a[0]); return JSON.stringify(c.groups) === "[\"dev\",\"ops\"]" && c.preferred_username === "alice" && c.email === "alice@example.com" && c.email_verified === true && c.name === "Alice"; })()' "$idt"
check "id_token signature verifies with the jwks key" js '(() => { const c = require("node:crypto"); const [h, p, sig] = a[0].split("."); const k = J(a[1]).keys.find((x) => x.kid === hdr(a[0]).kid); return c.verify("sha256", Buffer.from(h + "." + p), c.createPublicKey({ key: k, format: "jwk" }), Buffer.from(sig, "base64url")); })()' "$idt" "$jwks"
check "id_token ttl 300" js '(() => { const c = jwt(a[0]); return c.exp - c.iat === 300; })()' "$idt"
check "access token ttl 300" js 'J(a[0]).expires_in === 300 && J(a[0]).token_type === "Bearer"' "$tokens"
rt1=$(field "$tokens" refresh_token)
check "refresh_token issued (offline_access not needed)" test -n "$rt1"
at=$(field "$tokens" access_token)
ui=$(curl -s -H "authorization: Bearer $at" "$issuer/me")
check "userinfo has groups and preferred_username" js '(() => { const c = J(a[0]); return c.sub === "alice" && JSON.stringify(c.groups) === "[\"dev\",\"ops\"]" && c.preferred_username === "alice"; })()' "$ui"


# wrong verifier
v2=$(verifier)
cb=$(node signin.mjs code "$(auth_url berth "$v2" st-2 nonce-2)" alice pw-alice)
r=$(tok -d grant_type=authorization_code -d "code=$(param "$cb" code)" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$(verifier)")
check "wrong code_verifier -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"

# no PKCE -> error redirect to the callback
cb=$(node signin.mjs code "$issuer/auth?response_type=code&client_id=berth&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=openid&state=st-3&nonce=n" alice pw-alice 2>/dev/null)
check "no code_challenge -> error=invalid_request at the callback" js 'new URL(a[0]).searchParams.get("error") === "invalid_request" && new URL(a[0]).searchParams.get("state") === "st-3"' "$cb"

# ---- refresh ---------------------------------------------------------------------
check "POST /test/users/alice groups -> 204" test "$(user alice '{"groups":["dev"]}')" = 204
got=$(curl -s "$issuer/test/users/alice")
check "GET /test/users/alice has new groups, no password" js '(() => { const u = J(a[0]); return JSON.stringify(u.groups) === "[\"dev\"]" && !("password" in u) && u.disabled === false; })()' "$got"
r=$(refresh "$rt1")
rt2=$(field "$r" refresh_token)
check "refresh gives an id_token with the new groups" js '(() => { const c = jwt(J(a[0]).id_token); return JSON.stringify(c.groups) === "[\"dev\"]" && c.sub === "alice" && c.aud === "berth"; })()' "$r"
check "refresh rotates the refresh token" js '!!a[0] && a[0] !== a[1]' "$rt2" "$rt1"
check "refreshed id_token keeps the original nonce" js 'jwt(J(a[0]).id_token).nonce === "nonce-1"' "$r"
echo "refreshed id_token $(js 'jwt(J(a[0]).id_token)' "$r")"

check "disable alice -> 204" test "$(user alice '{"disabled":true}')" = 204
r=$(refresh "$rt2")
check "refresh for a disabled user -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"
check "userinfo for a disabled user -> 401" test "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $at" "$issuer/me")" = 401
if node signin.mjs code "$(auth_url berth "$(verifier)" s n)" alice pw-alice >/dev/null 2>"$work/err"; then bad "signin of a disabled user fails"; else ok "signin of a disabled user fails ($(cat "$work/err"))"; fi
check "enable alice -> 204" test "$(user alice '{"disabled":false}')" = 204
r=$(refresh "$rt2")
rt3=$(field "$r" refresh_token)
check "refresh works again once re-enabled" test -n "$rt3"
r=$(refresh "$rt2")
check "replaying a rotated refresh token -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"
r=$(refresh "$rt3")
check "...and it revokes the grant (the newest one fails too)" js 'J(a[0]).error === "invalid_grant"' "$r"

# a code used twice: invalid_grant, and the tokens issued from it are revoked
v=$(verifier)
cb=$(node signin.mjs code "$(auth_url berth "$v" st-4 nonce-4)" alice pw-alice)
code=$(param "$cb" code)
first=$(tok -d grant_type=authorization_code -d "code=$code" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v")
again=$(tok -d grant_type=authorization_code -d "code=$code" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v")
check "code used twice -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$again"
r=$(refresh "$(field "$first" refresh_token)")
check "...and the refresh token from its first use is revoked" js 'J(a[0]).error === "invalid_grant"' "$r"

# revocation
login alice pw-alice || die "login alice"
rt=$(field "$tokens" refresh_token)
code_rev=$(curl -s -o /dev/null -w '%{http_code}' -u berth:berth-secret -d "token=$rt" -d token_type_hint=refresh_token "$issuer/token/revocation")
check "revocation -> 200" test "$code_rev" = 200
r=$(refresh "$rt")
check "refresh after revocation -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"

# create, sign in, delete
check "create bob -> 204" test "$(user bob '{"password":"pw-bob","email":"bob@example.com","name":"Bob","groups":["ops"]}')" = 204
login bob pw-bob || die "login bob"
check "bob's id_token" js '(() => { const c = jwt(J(a[0]).id_token); return c.sub === "bob" && JSON.stringify(c.groups) === "[\"ops\"]"; })()' "$tokens"
rt=$(field "$tokens" refresh_token)
check "delete bob -> 204" test "$(user bob '{"delete":true}')" = 204
check "GET deleted bob -> 404" test "$(curl -s -o /dev/null -w '%{http_code}' "$issuer/test/users/bob")" = 404
r=$(refresh "$rt")
check "refresh for a deleted user -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"

# wrong password, unknown user
rc=0; node signin.mjs code "$(auth_url berth "$(verifier)" s n)" alice wrong >/dev/null 2>"$work/err" || rc=$?
check "wrong password makes signin.mjs exit 1 ($(cat "$work/err"))" test "$rc" -eq 1
if node signin.mjs code "$(auth_url berth "$(verifier)" s n)" nobody pw >/dev/null 2>&1; then bad "unknown user fails"; else ok "unknown user fails"; fi

# client_secret_post
v=$(verifier)
cb=$(node signin.mjs code "$(auth_url berth-post "$v" sp np)" carol pw-carol)
r=$(curl -s -d client_id=berth-post -d client_secret=berth-post-secret -d grant_type=authorization_code -d "code=$(param "$cb" code)" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v" "$issuer/token")
check "client_secret_post client gets tokens" js '!!J(a[0]).id_token && !!J(a[0]).refresh_token && jwt(J(a[0]).id_token).sub === "carol"' "$r"
r2=$(curl -s -d client_id=berth-post -d client_secret=berth-post-secret -d grant_type=refresh_token -d "refresh_token=$(field "$r" refresh_token)" "$issuer/token")
check "client_secret_post refresh" js '!!J(a[0]).id_token' "$r2"
r3=$(curl -s -u berth-post:berth-post-secret -d grant_type=refresh_token -d "refresh_token=$(field "$r2" refresh_token)" "$issuer/token")
check "the library takes _basic and _post alike: a _post client may use _basic" js '!!J(a[0]).id_token' "$r3"
r4=$(curl -s -d client_id=berth-post -d client_secret=wrong -d grant_type=refresh_token -d "refresh_token=$(field "$r3" refresh_token)" "$issuer/token")
check "wrong client secret -> invalid_client" js 'J(a[0]).error === "invalid_client"' "$r4"

# prompt=consent keeps offline_access in the granted scope (auto-consent, no page)
v=$(verifier)
cb=$(node signin.mjs code "$(auth_url berth "$v" sc nc '&prompt=consent')" carol pw-carol)
r=$(tok -d grant_type=authorization_code -d "code=$(param "$cb" code)" -d redirect_uri=http://127.0.0.1:9/cb -d "code_verifier=$v")
check "prompt=consent: scope has offline_access, no consent page" js 'J(a[0]).scope.split(" ").includes("offline_access") && !!J(a[0]).refresh_token' "$r"

# ---- device flow -------------------------------------------------------------------
da=$(curl -s -u berth:berth-secret -d 'scope=openid profile email groups offline_access' "$issuer/device/auth")
echo "device authorization $da"
check "device authorization response" js '(() => { const d = J(a[0]); return !!d.device_code && !!d.user_code && d.verification_uri === a[1] + "/device" && d.verification_uri_complete.startsWith(a[1] + "/device?user_code=") && d.expires_in === 600; })()' "$da" "$issuer"
dc=$(field "$da" device_code)
poll() { tok -d grant_type=urn:ietf:params:oauth:grant-type:device_code -d "device_code=$1"; }
r=$(poll "$dc")
check "poll before approval -> authorization_pending" js 'J(a[0]).error === "authorization_pending"' "$r"
if node signin.mjs device "$issuer/device" WRONG-CODE alice pw-alice >/dev/null 2>"$work/err"; then bad "wrong user code fails"; else ok "wrong user code fails ($(cat "$work/err"))"; fi
out=$(node signin.mjs device "$(field "$da" verification_uri)" "$(field "$da" user_code)" alice pw-alice) || die "signin.mjs device failed"
check "signin.mjs device prints approved" test "$out" = approved
sleep 1
r=$(poll "$dc")
check "device_code grant gives id_token, access and refresh tokens" js '(() => { const t = J(a[0]); const c = jwt(t.id_token); return !!t.access_token && !!t.refresh_token && c.sub === "alice" && c.aud === "berth" && JSON.stringify(c.groups) === "[\"dev\"]" && c.preferred_username === "alice"; })()' "$r"
r2=$(refresh "$(field "$r" refresh_token)")
check "device flow refresh token works" js '!!J(a[0]).id_token' "$r2"
r=$(poll "$dc")
check "device_code used twice -> invalid_grant" js 'J(a[0]).error === "invalid_grant"' "$r"

da=$(curl -s -u berth:berth-secret -d 'scope=openid groups' "$issuer/device/auth")
out=$(node signin.mjs device "$(field "$da" verification_uri_complete)" - carol pw-carol) || die "signin.mjs device (complete) failed"
check "signin.mjs device with verification_uri_complete" test "$out" = approved
sleep 1
r=$(poll "$(field "$da" device_code)")
check "device tokens for carol" js 'jwt(J(a[0]).id_token).sub === "carol"' "$r"

da=$(curl -s -u berth:berth-secret -d 'scope=openid' "$issuer/device/auth")
if node signin.mjs device "$(field "$da" verification_uri)" "$(field "$da" user_code)" alice bad >/dev/null 2>"$work/err"; then bad "device flow wrong password fails"; else ok "device flow wrong password fails ($(cat "$work/err"))"; fi

check "the provider printed exactly one line on stdout" test "$(wc -l < "$work/provider.out")" -eq 1
if [ "$failed" -ne 0 ]; then echo "--- provider log"; cat "$work/provider.err"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
