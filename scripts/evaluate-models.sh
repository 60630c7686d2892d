#!/usr/bin/env bash
# Reproduces the purchase tables of docs/models.md: generates the default and the 20,000-session data
# sets, trains GRU, LSTM and Transformer on each (and a GRU on the DIGINETICA sample in ../shared/data when
# it is there), then runs `clickpath evaluate` on each set: the purchase table and the next-item table
# (baselines); then trains the session outlook on each set (return propensity and segments). Tables and JSON go to OUT (default target/model-eval); models already in OUT are kept. Needs a release build: cargo build --release -p clickpath-cli --bin clickpath
#
#   scripts/evaluate-models.sh [OUT]          # about 10 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/model-eval}
BIN=${CLICKPATH_BIN:-target/release/clickpath}
[ -x "$BIN" ] || { echo "no $BIN; run: cargo build --release -p clickpath-cli --bin clickpath" >&2; exit 1; }
mkdir -p "$OUT"

evaluate_set() { # name input format truth models...
  local name=$1 input=$2 format=$3 truth=$4; shift 4
  local args=(--input "$input" --format "$format" --json "$OUT/$name.json")
  [ -n "$truth" ] && args+=(--truth "$truth")
  for m in "$@"; do args+=(--model "$m"); done
  echo "== $name" | tee "$OUT/$name.md"
  "$BIN" evaluate "${args[@]}" | tee -a "$OUT/$name.md"
}

train() { # input format arch out (kept when OUT already has it: delete OUT to retrain)
  [ -f "$4/meta.json" ] && { echo "kept $4"; return; }
  "$BIN" train --model "$3" --input "$1" --format "$2" --out "$4" > "$4.log" 2>&1 \
    || { cat "$4.log" >&2; exit 1; }
  echo "trained $4"
}

# Default generated set (seed 42), the data of models/gru-example.
"$BIN" generate --out "$OUT/default" > /dev/null
for arch in gru lstm transformer; do
  train "$OUT/default/events.jsonl" jsonl "$arch" "$OUT/default-$arch"
done
evaluate_set default "$OUT/default/events.jsonl" jsonl "$OUT/default/truth.jsonl" \
  "$OUT/default-gru" "$OUT/default-lstm" "$OUT/default-transformer"

# 20,000 generated sessions (seed 11).
"$BIN" generate --sessions 20000 --seed 11 --out "$OUT/s20k" > /dev/null
for arch in gru lstm transformer; do
  train "$OUT/s20k/events.jsonl" jsonl "$arch" "$OUT/s20k-$arch"
done
evaluate_set s20k "$OUT/s20k/events.jsonl" jsonl "$OUT/s20k/truth.jsonl" \
  "$OUT/s20k-gru" "$OUT/s20k-lstm" "$OUT/s20k-transformer"

# DIGINETICA sample (real data; views and purchases only).
DG=../shared/data/diginetica_cikm2016/DERIVED_joined_views_purchases_sessions1-3999.csv
if [ -f "$DG" ]; then
  train "$DG" diginetica gru "$OUT/diginetica-gru"
  evaluate_set diginetica "$DG" diginetica "" "$OUT/diginetica-gru"
else
  echo "== diginetica: $DG not found (no ../shared/data here); skipped"
fi

# Session outlook (return propensity within a horizon, behavioural segments): the generated sets (their
# sessions span about 2.5 and 10 days: 12- and 24-hour horizons) and DIGINETICA's purchases file (known users,
# January to mid-June 2016; --data-end because some of its timeframes put purchases months after the window).
outlook() { # name input format args...
  local name=$1 input=$2 format=$3; shift 3
  echo "== $name outlook" | tee "$OUT/$name-outlook.md"
  "$BIN" train --model outlook --input "$input" --format "$format" --out "$OUT/$name-outlook" "$@" \
    | tee -a "$OUT/$name-outlook.md"
}
outlook default "$OUT/default/events.jsonl" jsonl --horizon-hours 12
outlook s20k "$OUT/s20k/events.jsonl" jsonl --horizon-hours 24
DGP=../shared/data/diginetica_cikm2016/train-purchases.csv
if [ -f "$DGP" ]; then
  outlook diginetica "$DGP" diginetica --horizon-hours 720 --data-end 2016-06-18
fi
