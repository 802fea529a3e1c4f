#!/usr/bin/env bash
# API fuzzing over the gateway's own OpenAPI spec with schemathesis (from PyPI, in a venv
# under .stack-tools): every operation gets generated valid and invalid input; the run
# fails on any 5xx and on a spec/server mismatch (scripts/schemathesis.toml). App routes
# run with a user's token, admin routes with the admin key.
#   scripts/api-fuzz.sh [max examples per operation, default 40]
#   scripts/api-fuzz.sh --install    (only install schemathesis; `make test` does it early,
#                                     beside the build, as the download takes a while)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
examples=${1:-40}
SCHEMATHESIS_VERSION=4.32.5

venv=$ROOT/.stack-tools/schemathesis-$SCHEMATHESIS_VERSION
if [ ! -x "$venv/bin/schemathesis" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ "$examples" = --install ] && exit 0

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/stack.sh" start
eval "$("$ROOT/scripts/stack.sh" env)"
build_debug_binaries -q -p gateway -p bench

db="apifuzz_$(date +%s)"
psql -q "$DATABASE_URL" -c "CREATE DATABASE $db"
export DATABASE_URL="${DATABASE_URL%/*}/$db"
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export APP_AUTH__JWT_SECRET="fuzz-jwt-$(secret)" APP_AUTH__ADMIN_KEY="fuzz-admin-$(secret)"
export APP_PAYMENTS__CALLBACK_SECRET="fuzz-callback-$(secret)"
export APP_PULSAR__SECKILL_ORDERS_TOPIC="fuzz-$(date +%s)" APP_LOG__FILTER=error
export APP_RATE_LIMIT__PER_IP__PER_SECOND=1000000 APP_RATE_LIMIT__PER_IP__BURST=1000000
export APP_RATE_LIMIT__PER_USER__PER_SECOND=1000000 APP_RATE_LIMIT__PER_USER__BURST=1000000
export APP_SALE_TOKENS__PER_USER__PER_SECOND=1000000 APP_SALE_TOKENS__PER_USER__BURST=1000000
port=18280
out=$ROOT/target/api-fuzz
mkdir -p "$out"
APP_GATEWAY__PORT=$port target/debug/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
trap 'kill $gateway_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || die "gateway not ready; see $out/gateway.log"

# Something for the generated requests to find: a running sale (without sale tokens, so
# generated orders reach the order path past the token check) and a catalog item.
admin() { curl -sf -H "Authorization: Bearer $APP_AUTH__ADMIN_KEY" -H 'Content-Type: application/json' "$@" >/dev/null; }
start=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
admin -X POST "http://127.0.0.1:$port/admin/promotions" \
  -d "{\"sku_id\":\"fuzz\",\"title\":\"fuzz\",\"price_cents\":100,\"stock\":1000,\"per_user_limit\":1,\"requires_token\":false,\"starts_at\":\"$start\",\"ends_at\":\"$end\"}"
admin -X POST "http://127.0.0.1:$port/admin/skus" -d '{"id":"fuzz-sku","title":"fuzz","price_cents":500,"stock":1000}'
target/debug/bench mint-tokens --count 1 --out "$out/token.txt"

run() { # label auth-header schemathesis-filter...
  local label=$1 auth=$2
  shift 2
  say "schemathesis: $label"
  "$venv/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error --max-examples "$examples" --workers 1 \
    -H "Authorization: Bearer $auth" "$@" \
    --report junit --report-junit-path "$out/$label.xml" --suppress-health-check all
}
run app "$(cat "$out/token.txt")" --include-path-regex '^/api/'
run admin "$APP_AUTH__ADMIN_KEY" --include-path-regex '^/admin/'
run operations none --exclude-path-regex '^/(api|admin)/'
say "no 5xx; reports in $out"
