#!/usr/bin/env bash
# scripts/python-interop.sh: proves clickpath's wire format works with Kafka clients nobody here wrote.
#
# Python (confluent-kafka + fastavro, from PyPI, into a venv under target/) produces click events to the
# raw topic, `clickpath run all` processes them on the real broker, and Python reads the prediction and
# alert topics back. Fails if any record does not decode with the schemas in schemas/, if a prediction is
# missing for any event Python sent, if no CARD_TESTING alert arrives, or if clickpath does not drain and
# exit 0 on SIGTERM. Topics and consumer groups are unique per run.
#
# Needs a broker: CLICKPATH_TEST_BROKERS, else the one of scripts/kafka.sh (start it with `scripts/kafka.sh up`).
# With INTEROP_SECURE=1 every client (Python and clickpath, topic creation included) goes through the broker's
# TLS + SASL/SCRAM listener instead: start the broker with KAFKA_SECURE_PORT set (same KAFKA_* variables
# here), and the run also checks that a wrong SCRAM password is refused.
# Environment: PYTHON_INTEROP_VENV (default target/venv-interop), CLICKPATH_BIN (default: cargo build and
# target/debug/clickpath), INTEROP_USERS (default 40), INTEROP_TIMEOUT (seconds, default 120).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PYTHON_INTEROP_VENV:-target/venv-interop}"
REQ=examples/python/requirements.txt
USERS="${INTEROP_USERS:-40}"
TIMEOUT="${INTEROP_TIMEOUT:-120}"
say() { echo "python-interop: $*" >&2; }

BROKERS="${CLICKPATH_TEST_BROKERS:-}"
props=()
if [[ "${INTEROP_SECURE:-0}" == 1 ]]; then
  BROKERS="$(scripts/kafka.sh secure-bootstrap)"
  mapfile -t props < <(scripts/kafka.sh secure-properties | grep -v '^#' | grep '=')
elif [[ -z "$BROKERS" ]]; then
  scripts/kafka.sh status >/dev/null 2>&1 || { say "no broker: set CLICKPATH_TEST_BROKERS or run scripts/kafka.sh up"; exit 1; }
  BROKERS="$(scripts/kafka.sh bootstrap)"
fi

stamp="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$VENV/.clickpath-req" 2>/dev/null)" != "$stamp" ]]; then
  say "installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  echo "$stamp" >"$VENV/.clickpath-req"
fi
PY="$VENV/bin/python"
# Keep examples/python free of __pycache__ (it is not git-ignored).
export PYTHONDONTWRITEBYTECODE=1

if [[ -z "${CLICKPATH_BIN:-}" ]]; then
  cargo build --quiet -p clickpath-cli --bin clickpath
  CLICKPATH_BIN=target/debug/clickpath
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/clickpath-interop.XXXXXX")"
run_id="pyinterop-$(date +%s)-$$"
clickpath_pid=""
cleanup() {
  if [[ -n "$clickpath_pid" ]] && kill -0 "$clickpath_pid" 2>/dev/null; then
    kill -KILL "$clickpath_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/clickpath.toml" <<TOML
[kafka]
brokers = "$BROKERS"
group_prefix = "$run_id"

[topics]
raw = "$run_id.clicks.raw"
clean = "$run_id.clicks.clean"
sessions = "$run_id.sessions"
features = "$run_id.features"
predictions = "$run_id.predictions"
alerts = "$run_id.alerts"
dead_letters = "$run_id.dead-letters"
partitions = 3

[runtime]
poll_timeout_ms = 100
tick_interval_ms = 200
shutdown_grace_ms = 20000

[http]
bind = "127.0.0.1:0"

[kafka.properties]
TOML
py_props=()
for kv in "${props[@]}"; do
  printf '"%s" = "%s"\n' "${kv%%=*}" "${kv#*=}" >>"$work/clickpath.toml"
  py_props+=(--property "$kv")
done
# The loader layers CLICKPATH__* variables over the file; none from the caller may leak into this run.
unset_vars=()
while IFS='=' read -r name _; do [[ "$name" == CLICKPATH__* ]] && unset_vars+=(-u "$name"); done < <(env)
cp_env=(env "${unset_vars[@]}" CLICKPATH_CONFIG="$work/clickpath.toml")

if [[ "${#props[@]}" -gt 0 ]]; then
  say "checking that $BROKERS refuses a wrong SCRAM password"
  "$PY" - "$BROKERS" "${props[@]}" <<'PY'
import sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
cfg = {"bootstrap.servers": sys.argv[1]}
cfg.update(kv.split("=", 1) for kv in sys.argv[2:])
cfg["sasl.password"] = "not-the-password"
try:
    AdminClient(cfg).list_topics(timeout=10)
except KafkaException as e:
    print(f"python-interop: refused as expected: {e.args[0].str()}", file=sys.stderr)
else:
    sys.exit("python-interop: the broker accepted a wrong SCRAM password")
PY
fi

say "creating topics $run_id.* on $BROKERS"
"${cp_env[@]}" "$CLICKPATH_BIN" topics create >"$work/topics.log" 2>&1 || { cat "$work/topics.log" >&2; exit 1; }

say "producing $USERS shoppers and one card tester with confluent-kafka"
(cd examples/python && "$PWD/../../$PY" producer.py --brokers "$BROKERS" --topic "$run_id.clicks.raw" \
   --users "$USERS" --fraud --seed "$$" "${py_props[@]}") >"$work/produced.json"
events="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$work/produced.json")"
say "produced $events events"

say "running every stage (clickpath run all)"
"${cp_env[@]}" "$CLICKPATH_BIN" run all >"$work/clickpath.log" 2>&1 &
clickpath_pid=$!

status=0
(cd examples/python && "$PWD/../../$PY" consumer.py --brokers "$BROKERS" \
   --predictions "$run_id.predictions" --alerts "$run_id.alerts" \
   --min-predictions "$events" --min-alerts 1 --event-ids "$work/produced.json" \
   --timeout "$TIMEOUT" "${py_props[@]}") >"$work/consumed.json" || status=$?
cat "$work/consumed.json"

say "sending SIGTERM to clickpath (pid $clickpath_pid)"
kill -TERM "$clickpath_pid" 2>/dev/null || true
exit_code=0
wait "$clickpath_pid" || exit_code=$?
clickpath_pid=""
if [[ "$exit_code" != 0 ]]; then
  say "clickpath exited with $exit_code after SIGTERM; last log lines:"
  tail -n 30 "$work/clickpath.log" >&2
  status=1
fi
if [[ "$status" != 0 ]]; then
  say "FAILED; last clickpath log lines:"
  tail -n 20 "$work/clickpath.log" >&2
  exit 1
fi
"$PY" - "$work/consumed.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
if "CARD_TESTING" not in s["alert_types"]:
    sys.exit(f"python-interop: no CARD_TESTING alert among {s['alert_types']}")
PY
say "ok: Python produced $events events; clickpath's predictions and alerts all decoded in Python; clean SIGTERM exit"
