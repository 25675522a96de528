#!/usr/bin/env bash
# GPU check of the trainer: a short --bf16 and a short --fp16 run of the 6-layer SmolLM2 student
# on CUDA, printing tokens/s and MFU against the card's dense bf16 peak.
#
#   scripts/gpu-check.sh [MODEL.gguf] [DATASET.jsonl]
#
# MODEL defaults to ~/.cache/distill/models/SmolLM2-135M-Instruct.Q4_1.gguf (cargo xtask setup);
# DATASET to datasets/generated/smollm2_lab.jsonl (crates/student/examples/teacher_dataset.rs).
# Env: DISTILL (a built `distill` binary; default: build it with cargo), STEPS (default 40),
# BATCH (8), SEQ (256), PEAK_TFLOPS (default 989: H100/H200 SXM dense bf16).
# On machines whose torch lives elsewhere, point LD_LIBRARY_PATH at its lib/ first.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-${HOME}/.cache/distill/models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATASET=${2:-datasets/generated/smollm2_lab.jsonl}
STEPS=${STEPS:-40}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
OUT=${OUT:-$(mktemp -d)}

for f in "$MODEL" "$DATASET"; do
  [[ -e $f ]] || { echo "gpu-check: $f is missing" >&2; exit 1; }
done
if [[ -z ${DISTILL:-} ]]; then
  cargo build --release --example distill
  DISTILL=target/release/examples/distill
fi
"$DISTILL" info
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

status=0
for precision in bf16 fp16; do
  dir="$OUT/$precision"
  rm -rf "$dir"
  echo "== --$precision: $STEPS steps, batch $BATCH, max length $SEQ"
  if ! "$DISTILL" train --dataset "$DATASET" --student-model "$MODEL" --keep-layers 6 \
      --loss kl --max-steps "$STEPS" --batch-size "$BATCH" --max-seq-len "$SEQ" \
      --save-every 0 --seed 7 --device cuda "--$precision" --output-dir "$dir"; then
    echo "--$precision: training failed" >&2
    status=1
    continue
  fi
  python3 - "$dir" "$PEAK_TFLOPS" "$precision" <<'PY'
import json, statistics, sys
out, peak, precision = sys.argv[1], float(sys.argv[2]), sys.argv[3]
args = json.load(open(f"{out}/training_args.json"))
params = args["parameters"]
steps = [json.loads(l) for l in open(f"{out}/metrics.jsonl") if '"val_loss"' not in l]
# Skip the first steps: CUDA context, allocator and kernel selection warm up there.
rates = [s["tokens_per_second"] for s in steps[5:]] or [s["tokens_per_second"] for s in steps]
tok_s = statistics.median(rates)
achieved = 6 * params * tok_s
print(f"--{precision}: {tok_s:,.0f} tok/s (median of {len(rates)} steps), "
      f"{achieved / 1e12:.1f} TFLOP/s by 6·N·tokens (N = {params / 1e6:.1f}M), "
      f"MFU {100 * achieved / (peak * 1e12):.2f}% of {peak:.0f} TFLOP/s; "
      f"loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}")
PY
done
exit $status
