#!/usr/bin/env bash
# The quick check: formatting, lints, and the tests that need no running dependency (unit
# tests and property tests of pure logic). Seconds once built; `make test` runs everything.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"

say "cargo fmt --check"
cargo fmt --all --check
# clippy's lints run as the tests build (common.sh): one build, not a check and a build.
lint_while_building
say "clippy's lints, then the unit and property tests (no stack)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast \
    -E 'kind(lib) | binary(pricing_properties) | binary(parsing_properties) | binary(settings)' "$@"
else
  cargo test --workspace --locked --no-fail-fast --lib "$@"
  cargo test -p order-core --locked --test pricing_properties --test settings "$@"
  cargo test -p gateway --locked --test parsing_properties "$@"
fi
