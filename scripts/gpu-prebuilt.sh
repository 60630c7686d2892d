#!/usr/bin/env bash
# The GPU run for a machine with an NVIDIA GPU but no Rust toolchain and no network (the device machines
# lent to sessions): `pack` builds clickpath and clickpath-lab with --features cuda HERE, strips and
# xz-compresses them into .devbin/ (git-ignored via .git/info/exclude; about 20 MB); `run` (THERE, from the
# repository root, with .devbin carried) unpacks them and runs the scorer benchmark on GPU and CPU and a
# GRU training run on the GPU, writing into $OUT (default ./gpu-results).
#
#   scripts/gpu-prebuilt.sh pack                   # here: ~15 min on 2 cores the first time
#   scripts/gpu-prebuilt.sh run                    # there
#
# CUDARC_CUDA_VERSION (default 13000) names the CUDA version the driver there supports, since no nvcc is
# needed here. scripts/gpu-bench.sh is the same run for a GPU machine that has cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    cargo build --release --locked -p clickpath-lab --bin clickpath-lab --features clickpath-lab/cuda
    cargo build --release --locked -p clickpath-cli --bin clickpath --features clickpath-cli/cuda
    mkdir -p .devbin
    grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devbin/' >>.git/info/exclude; }
    rm -f .devbin/clickpath.xz .devbin/clickpath-lab.xz
    for b in clickpath clickpath-lab; do strip -o ".devbin/$b" "target/release/$b"; done
    xz -T0 -6 .devbin/clickpath .devbin/clickpath-lab
    ls -la .devbin
    ;;
  run)
    out="${OUT:-gpu-results}"; mkdir -p "$out"
    exec > >(tee "$out/run.log") 2>&1
    for b in clickpath clickpath-lab; do
      [[ -x ".devbin/$b" ]] || { xz -dc ".devbin/$b.xz" >".devbin/$b"; chmod +x ".devbin/$b"; }
    done
    nvidia-smi || true; nproc
    lab=.devbin/clickpath-lab; bin=.devbin/clickpath
    echo "== scorer, GRU, GPU, hidden 16/64/256"
    timeout 120 "$lab" bench-scorer --device cuda --model gru --batch 1,64,1024,8192,32768,65536 --seconds 4 \
      --json "$out/scorer-gru-cuda.json"
    for h in 16 256; do
      timeout 60 "$lab" bench-scorer --device cuda --model gru --hidden "$h" --batch 1024,8192,65536 --seconds 3
    done
    echo "== scorer, GRU + next items (top 20 of 50 000), GPU and CPU"
    timeout 90 "$lab" bench-scorer --device cuda --model gru --items 50000 --top 20 --batch 1,64,1024,8192 --seconds 3 \
      --json "$out/scorer-gru-items-cuda.json"
    timeout 60 "$lab" bench-scorer --device cpu --model gru --items 50000 --top 20 --batch 1,64,256 --seconds 3
    echo "== scorer, LSTM, GPU"
    timeout 60 "$lab" bench-scorer --device cuda --model lstm --batch 1024,32768 --seconds 4
    echo "== scorer, GRU, CPU"
    timeout 60 "$lab" bench-scorer --device cpu --model gru --batch 1,64,1024 --seconds 3
    echo "== training: GRU on 20 000 generated sessions, GPU"
    "$bin" generate --out /tmp/gpu-data --sessions 20000 --seed 11 >/dev/null
    timeout 150 "$bin" train --model gru --device cuda --input /tmp/gpu-data/events.jsonl --out /tmp/gpu-gru
    timeout 60 "$bin" evaluate --input /tmp/gpu-data/events.jsonl --model /tmp/gpu-gru \
      --truth /tmp/gpu-data/truth.jsonl
    ;;
  *) echo "usage: scripts/gpu-prebuilt.sh pack | run" >&2; exit 2 ;;
esac
