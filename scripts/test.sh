#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts a real Kafka broker (scripts/kafka.sh),
# runs formatting and lint checks, then every test of the workspace against that broker, and stops the
# broker again if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."

started_kafka=0
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh up
  started_kafka=1
fi
cleanup() {
  if [ "$started_kafka" = 1 ]; then scripts/kafka.sh stop || true; fi
}
trap cleanup EXIT

export CLICKPATH_TEST_BROKERS="$(scripts/kafka.sh bootstrap)"
# A missing broker must fail the real-broker tests here, not skip them.
export CLICKPATH_REQUIRE_BROKER=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (broker at $CLICKPATH_TEST_BROKERS)"
cargo test --workspace --locked
