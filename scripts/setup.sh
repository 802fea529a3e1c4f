#!/usr/bin/env bash
# One-time (idempotent) machine setup: system packages, the pulsar-lite broker binary and the
# patched pulsar crate. Fast when everything is already in place.
set -euo pipefail
source "$(dirname "$0")/common.sh"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v patch >/dev/null || missing+=(patch)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v curl >/dev/null || missing+=(curl)
# Clock-skew tests run a binary under libfaketime (its clock off by minutes).
command -v faketime >/dev/null || missing+=(faketime)
# The dashboard's browser test drives Debian's Chromium through ChromeDriver.
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pulsar-lite ships as a binary inside its PyPI wheel; install just the wheel (no Python deps).
if [ ! -x "$PULSAR_LITE_BIN" ]; then
  say "installing pulsar-lite $PULSAR_LITE_VERSION"
  pkg_dir=$ROOT/.stack-tools/pulsar-lite-$PULSAR_LITE_VERSION/pkg
  rm -rf "$pkg_dir"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$pkg_dir" "pulsar-lite==$PULSAR_LITE_VERSION"
  found=$(find "$pkg_dir" -type f -name pulsar-lite -path '*/bin/*' | head -n1)
  [ -n "$found" ] || die "the pulsar-lite wheel holds no bin/pulsar-lite"
  chmod +x "$found"
  mkdir -p "$(dirname "$PULSAR_LITE_BIN")"
  ln -sf "$found" "$PULSAR_LITE_BIN"
fi

"$ROOT/scripts/patch-pulsar.sh"

