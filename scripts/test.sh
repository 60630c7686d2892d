#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts a real Kafka broker (scripts/kafka.sh, with a
# TLS + SASL/SCRAM listener beside the plaintext one), installs the Kafka Streams peer of the bench test and
# headless Chromium for the report test, runs
# formatting and lint checks, every test of the workspace against that broker (the broker-restart tests restart
# it once each), the deployment-file checks and the Python interop checks, and stops the broker again if this
# script started it.
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_SECURE_PORT="${KAFKA_SECURE_PORT:-19094}"
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
# Missing infrastructure must fail the tests that need it here, not skip them.
export CLICKPATH_REQUIRE_BROKER=1
# The broker-restart tests (crates/cli/tests/chaos_kill.rs) stop and start this broker (kafka.sh keeps its
# data and listeners); nothing else runs against it meanwhile.
export CLICKPATH_CHAOS_BROKER_STOP="$PWD/scripts/kafka.sh stop"
export CLICKPATH_CHAOS_BROKER_START="$PWD/scripts/kafka.sh start"

echo "== Kafka Streams peer (bench test): kafka-streams from Maven Central, compiled once"
scripts/streams-peer.sh install

echo "== headless Chromium (report test)"
if scripts/chromium.sh; then
  export CLICKPATH_REQUIRE_BROWSER=1
else
  echo "Chromium could not be installed; the report's browser test will skip." >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (broker at $CLICKPATH_TEST_BROKERS)"
cargo test --workspace --locked
echo "== OTLP export (feature otlp): clippy and its test"
cargo clippy -p clickpath-runtime -p clickpath-cli --features clickpath-runtime/otlp,clickpath-cli/otlp \
  --all-targets --locked -- -D warnings
cargo test -p clickpath-runtime --features otlp --locked --test otlp_export
echo "== deployment files"
scripts/validate-deploy.sh
echo "== python interop"
scripts/python-interop.sh
echo "== python interop over TLS + SASL/SCRAM"
INTEROP_SECURE=1 scripts/python-interop.sh
