#!/usr/bin/env bash
# The fast tier: formatting, lints, and every test that needs no broker, browser or Python (the tests that
# need one skip themselves here). A few minutes on a warm build; `make test` (scripts/test.sh) runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (no broker, browser or Python)"
env -u CLICKPATH_TEST_BROKERS -u CLICKPATH_REQUIRE_BROKER -u CLICKPATH_REQUIRE_BROWSER \
  -u CLICKPATH_CHAOS_BROKER_STOP -u CLICKPATH_CHAOS_BROKER_START \
  cargo test --workspace --locked
