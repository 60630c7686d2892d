#!/usr/bin/env bash
# The GPU run, as one command for a machine with an NVIDIA GPU (CUDA 12/13 driver, no internet needed once the
# crates are vendored or cached): builds clickpath with the burn-cuda backend, runs the CUDA-vs-CPU parity test, the
# scorer benchmark per batch size on GPU and CPU, and a GRU training run on both, writing everything into the
# folder given as $1 (default: $OUT, else ./gpu-results). Goal (issue 9): >= 20 M event-steps/s with batch p99
# <= 5 ms on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
exec > >(tee "$out/run.log") 2>&1

echo "== machine"
(nvidia-smi || echo "nvidia-smi not found") | tee "$out/nvidia-smi.txt"
nproc; free -g || true

echo "== build (release, --features cuda)"
time cargo build --release --locked -p clickpath-cli -p clickpath-lab --features clickpath-cli/cuda,clickpath-lab/cuda
bin=target/release/clickpath
lab=target/release/clickpath-lab

echo "== CUDA vs CPU parity test"
CLICKPATH_REQUIRE_GPU=1 cargo test --release --locked -p clickpath-model --features cuda cuda_ 2>&1 | tail -5

echo "== scorer benchmark"
"$lab" bench-scorer --device cuda --model gru --batch 1,64,1024,8192,32768,65536 --seconds 4 \
  --json "$out/scorer-gru-cuda.json" | tee "$out/scorer-gru-cuda.md"
"$lab" bench-scorer --device cuda --model lstm --batch 1024,32768 --seconds 4 \
  --json "$out/scorer-lstm-cuda.json" | tee "$out/scorer-lstm-cuda.md"
"$lab" bench-scorer --device cpu --model gru --batch 1,64,1024 --seconds 3 \
  --json "$out/scorer-gru-cpu.json" | tee "$out/scorer-gru-cpu.md"
echo "== scorer benchmark with next items (item head over 50 000 items, top 20 per event)"
"$lab" bench-scorer --device cuda --model gru --items 50000 --top 20 --batch 1,64,1024,8192 --seconds 3 \
  --json "$out/scorer-gru-items-cuda.json" | tee "$out/scorer-gru-items-cuda.md"
"$lab" bench-scorer --device cpu --model gru --items 50000 --top 20 --batch 1,64,256 --seconds 3 \
  --json "$out/scorer-gru-items-cpu.json" | tee "$out/scorer-gru-items-cpu.md"

echo "== training: GRU on 20 000 generated sessions, GPU then CPU"
"$bin" generate --out "$out/data" --sessions 20000 --seed 11 >/dev/null
"$bin" train --model gru --device cuda --input "$out/data/events.jsonl" --out "$out/gru-cuda" | tee "$out/train-gru-cuda.txt"
"$bin" train --model gru --device cpu --input "$out/data/events.jsonl" --out "$out/gru-cpu" | tee "$out/train-gru-cpu.txt"
"$bin" evaluate --input "$out/data/events.jsonl" --model "$out/gru-cuda" --model "$out/gru-cpu" \
  --truth "$out/data/truth.jsonl" --json "$out/evaluate.json" | tee "$out/evaluate.md"
rm -rf "$out/data"
echo "results in $out"
