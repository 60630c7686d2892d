#!/usr/bin/env bash
# scripts/chaos.sh [short|long|restarts [ROUNDS]]: the fault-injection suite of RELIABILITY.md on a Kafka broker of its own
# (127.0.0.1:39092, state in target/chaos-kafka), which it may stop and restart; the shared broker on 19092 is
# never touched. Runs `clickpath-lab chaos` on the debug `clickpath` binary (cargo build --bin clickpath --bin clickpath-lab):
#   1. hostile input through the cleaning stage      (short: 10 000 records, long: 100 000)
#   2. SIGKILLs of 3 sessionizer instances, exactly-once (short: ~50 000 events and 3 kills, long: ~1 M and 20)
#   3. the same at-least-once, and the cleaning stage both ways
#   4. a broker restart half-way (sessionizer, both guarantees)
#   5. a rebalance: one of three instances killed for good, time until its partitions commit again (both
#      guarantees)
#   6. back-pressure: the scorer ten times slower for a while (short: 10 s, ~30 000 feature vectors at
#      3 000/s; long: 30 s, ~100 000 at 4 000/s), memory bounded, lag grows, then recovers
#   restarts: the broker-restart repetition of RELIABILITY.md alone: ROUNDS (default 20) rounds, each one run
#      per guarantee; the stage rotates over sessionizer, cleaning and windower, the restart points over
#      early, half-way, late, twice, and with an instance SIGKILLed just before the stop and restarted
#      while the broker is down (so it joins and restores its state against a broker coming back)
# Each scenario prints its report; the script fails if any check fails, and stops the broker it started.
# Environment: CHAOS_KAFKA_PORT (39092), CHAOS_CONTROLLER_PORT (39093), CHAOS_OUT (log file; default
# target/chaos-<mode>.log).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-short}"
rounds="${2:-20}"
case "$mode" in
  short) hostile=10000; sessions=5000; kills=3; chain_sessions=3000; chain_kills=3; rb_sessions=3000; rate=2000; bp="--sessions 3000 --rate 3000 --slow-for-s 10" ;;
  long)  hostile=100000; sessions=100000; kills=20; chain_sessions=20000; chain_kills=12; rb_sessions=20000; rate=5000; bp="--sessions 10000 --rate 4000 --slow-for-s 30" ;;
  restarts) [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "restarts ROUNDS: a positive number" >&2; exit 2; } ;;
  *) echo "usage: scripts/chaos.sh [short|long|restarts [ROUNDS]]" >&2; exit 2 ;;
esac

port="${CHAOS_KAFKA_PORT:-39092}"
export KAFKA_PORT="$port"
export KAFKA_CONTROLLER_PORT="${CHAOS_CONTROLLER_PORT:-39093}"
export KAFKA_HOME_DIR="$PWD/target/chaos-kafka"
unset KAFKA_SECURE_PORT
out="${CHAOS_OUT:-target/chaos-$mode.log}"

# Share the jars of the main install (scripts/kafka.sh install puts them in .kafka/libs).
KAFKA_HOME_DIR="$PWD/.kafka" KAFKA_PORT=19092 scripts/kafka.sh install >/dev/null
mkdir -p "$KAFKA_HOME_DIR"
rm -rf "target/chaos-$mode"
[[ -e "$KAFKA_HOME_DIR/libs" ]] || ln -s "$PWD/.kafka/libs" "$KAFKA_HOME_DIR/libs"
scripts/kafka.sh reset >/dev/null
scripts/kafka.sh start
stop_broker() { scripts/kafka.sh stop >/dev/null 2>&1 || true; }
trap stop_broker EXIT

cargo build --bin clickpath --bin clickpath-lab
bin=target/debug/clickpath-lab
cfg="$KAFKA_HOME_DIR/clickpath.toml"
printf '[kafka]\nbrokers = "127.0.0.1:%s"\n' "$port" >"$cfg"
kafka="KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT KAFKA_HOME_DIR=$KAFKA_HOME_DIR"

: >"$out"
failed=0
last_ok=0
n=0
scenario() {
  local name="$1"; shift
  n=$((n + 1))
  [[ "$1" == hostile ]] || set -- "$@" --work-dir "target/chaos-$mode/$n"
  echo "== $name: clickpath-lab chaos $*" | tee -a "$out"
  local t0=$SECONDS
  if RUST_LOG=error "$bin" --config "$cfg" chaos "$@" 2>>"$out.stderr" | tee -a "$out"; then last_ok=1; else last_ok=0; failed=1; fi
  echo "(wall time $((SECONDS - t0)) s)" | tee -a "$out"
}

if [[ "$mode" == restarts ]]; then
  stages=(sessionizer cleaning windower)
  points=("--broker-at 0.5" "--broker-at 0.15" "--broker-at 0.85" "--broker-at 0.3,0.7" "--broker-at 0.5 --broker-kill" "--broker-at 0.25,0.75 --broker-kill")
  pass=0
  for ((r = 0; r < rounds; r++)); do
    stage="${stages[$((r % 3))]}"
    at="${points[$((r % 6))]}"
    for g in exactly_once at_least_once; do
      # shellcheck disable=SC2086
      scenario "restart round $((r + 1))/$rounds: $stage $g, $at" kill --stage "$stage" --guarantee "$g" \
        --sessions 2000 --kills 0 --rate 2000 --seed $((40 + r)) $at --timeout-s 300 \
        --broker-stop "$kafka $PWD/scripts/kafka.sh stop" --broker-start "$kafka $PWD/scripts/kafka.sh start"
      pass=$((pass + last_ok))
    done
  done
  echo "broker-restart repetition: $pass of $((2 * rounds)) runs passed" | tee -a "$out"
  echo "report: $out (stage and tool logs: $out.stderr; instance logs: target/chaos-$mode/N)"
  exit "$failed"
fi

scenario "hostile input" hostile --records "$hostile" --seed 1
for g in exactly_once at_least_once; do
  scenario "sessionizer $g, $kills SIGKILLs" kill --stage sessionizer --guarantee "$g" \
    --sessions "$sessions" --kills "$kills" --seed 2
  scenario "cleaning $g, $kills SIGKILLs" kill --stage cleaning --guarantee "$g" \
    --sessions "$sessions" --kills "$kills" --seed 3
done
# The chained pipeline (`run all`): every output topic compared record by record with an uninterrupted run.
scenario "chain exactly_once, $chain_kills SIGKILLs" kill --stage chain --guarantee exactly_once \
  --sessions "$chain_sessions" --kills "$chain_kills" --seed 3
scenario "chain rebalance (one leaves, one joins), exactly_once" kill --stage chain --guarantee exactly_once \
  --sessions "$rb_sessions" --kills 0 --rebalance --add-instance --rate "$rate" --seed 5
# The same pipeline per stage (six groups), MODEL_SURPRISE alerts left out (their order is timing's).
scenario "per-stage pipeline exactly_once, $chain_kills SIGKILLs" kill --stage pipeline \
  --guarantee exactly_once --sessions "$chain_sessions" --kills "$chain_kills" --seed 3
for g in exactly_once at_least_once; do
  scenario "broker restart, $g" kill --stage sessionizer --guarantee "$g" --sessions "$rb_sessions" \
    --kills 0 --rate "$rate" --seed 4 \
    --broker-stop "$kafka $PWD/scripts/kafka.sh stop" --broker-start "$kafka $PWD/scripts/kafka.sh start"
done
for g in exactly_once at_least_once; do
  scenario "rebalance, $g" kill --stage sessionizer --guarantee "$g" --sessions "$rb_sessions" \
    --kills 0 --rebalance --rate "$rate" --seed 5
done

# shellcheck disable=SC2086
scenario "back-pressure, scorer 10x slower" backpressure --slow-factor 10 $bp --input-buffer-kbytes 1024 --seed 6

echo "report: $out (stage and tool logs: $out.stderr; instance logs: target/chaos-$mode/N)"
exit "$failed"
