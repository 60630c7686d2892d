#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: coverage-guided fuzzing (cargo-fuzz, libFuzzer) of clickpath's parsers
# of untrusted input, SECONDS in total (default 60) split evenly over the targets (default: all of them):
#   wire_decode  the Confluent/Avro wire decoder for every record type, plus validation of decoded events
#   adapters     the REES46, Retailrocket, OTTO and DIGINETICA readers
#   config       the layered configuration loader
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora grow in fuzz/corpus/<target> (seeded from the adapter fixtures and config/); a crash leaves its
# input in fuzz/artifacts/<target>/ and fails the script. The targets' checks are fuzz/src/targets.rs; the
# stable-toolchain test crates/lab/tests/fuzz_smoke.rs runs the same checks on mutated seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

total="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(wire_decode adapters config)
per=$(( total / ${#targets[@]} ))
(( per >= 1 )) || per=1

toolchain="${FUZZ_TOOLCHAIN:-nightly}"
rustup run "$toolchain" rustc --version >/dev/null 2>&1 \
  || { echo "fuzz.sh: no $toolchain toolchain (rustup toolchain install $toolchain)" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 \
  || { echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }

# Seeds (idempotent): the first byte of an adapters input picks the format (Format::ALL order).
seed() { mkdir -p "fuzz/corpus/$1"; [[ -f "fuzz/corpus/$1/$2" ]] || cat >"fuzz/corpus/$1/$2"; }
fix=crates/adapters/tests/fixtures
{ printf '\x00'; head -c 2000 "$fix/rees46/2019-Oct-sample.csv"; } | seed adapters seed-rees46
{ printf '\x01'; cat "$fix/retailrocket/events.csv"; } | seed adapters seed-retailrocket
{ printf '\x02'; head -c 2000 "$fix/otto/train.jsonl"; } | seed adapters seed-otto
printf '\x03sessionId;userId;itemId;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n2;18278.0;32118;243569;2016-05-09\n' \
  | seed adapters seed-diginetica
for f in config/*.toml; do seed config "seed-$(basename "$f")" <"$f"; done
mkdir -p fuzz/corpus/wire_decode

# Build once (shared by every target), then run each for its share of the time.
cargo "+$toolchain" fuzz build --sanitizer none -O
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${per}s"
  log="fuzz/artifacts/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  if ! cargo "+$toolchain" fuzz run --sanitizer none -O "$t" -- \
        -max_total_time="$per" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz.sh: $t found a failure; input in fuzz/artifacts/$t/ (cargo +$toolchain fuzz fmt $t FILE)" >&2
    exit 1
  fi
  grep -E '^Done|stat::number_of_executed_units|cov:' "$log" | tail -n 2
  echo "corpus: $(ls "fuzz/corpus/$t" | wc -l) inputs"
done
