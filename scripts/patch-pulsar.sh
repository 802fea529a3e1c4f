#!/usr/bin/env bash
# Prepares .patched/pulsar-<version>: the crates.io copy of the pulsar crate plus our patch
# (patches/), which Cargo.toml's [patch.crates-io] points at. No third-party source is
# committed; this rebuilds it from the registry whenever the patch file changes.
set -euo pipefail
source "$(dirname "$0")/common.sh"

patch_file=$ROOT/patches/pulsar-$PULSAR_CRATE_VERSION-optional-checksum.patch
dest=$ROOT/.patched/pulsar-$PULSAR_CRATE_VERSION
stamp=$dest/.seckill-patch.sha256
want=$(sha256sum "$patch_file" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

say "preparing patched pulsar $PULSAR_CRATE_VERSION"
# Ask cargo to download the exact crate through a throwaway manifest (the workspace itself
# cannot resolve until the patched copy exists).
fetch_dir=$ROOT/.patched/fetch
mkdir -p "$fetch_dir/src"
cat >"$fetch_dir/Cargo.toml" <<TOML
[package]
name = "seckill-fetch-pulsar"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
pulsar = { version = "=$PULSAR_CRATE_VERSION", default-features = false }
[workspace]
TOML
echo 'fn main() {}' >"$fetch_dir/src/main.rs"
cargo fetch -q --manifest-path "$fetch_dir/Cargo.toml"
crate_file=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/pulsar-"$PULSAR_CRATE_VERSION".crate 2>/dev/null | head -n1)
[ -n "$crate_file" ] || die "cargo fetch did not leave pulsar-$PULSAR_CRATE_VERSION.crate in the registry cache"

rm -rf "$dest"
mkdir -p "$ROOT/.patched"
tar -xzf "$crate_file" -C "$ROOT/.patched"
patch -s -p1 -d "$dest" <"$patch_file" || die "patch $patch_file does not apply to pulsar $PULSAR_CRATE_VERSION"
echo "$want" >"$stamp"
