#!/usr/bin/env bash
# Issue 16's distillation-quality table, the cross-tokenizer pair: Gemma 3 270M (base, its
# SentencePiece vocabulary of 262,144) teaching a 6-layer SmolLM2 student (byte-level BPE,
# 49,152). The same prompts, split, student, steps and seeds as
# scripts/quality_same_tokenizer.sh; three methods:
#   hard  --loss ce                                  (hard labels only)
#   kd    --loss kl --alpha 0.5                      (stored top-20, aligned on bytes)
#   gkd   --teacher-model gemma --loss jsd --alpha 0.5 --on-policy 0.5
#         (half the batches answered by the student and scored by Gemma as text)
# The teacher answers in-process (`--provider local`, top-20 log-probabilities with their
# bytes): the same records llama.cpp's server gives, at a fraction of its cost here.
#
#   scripts/quality_cross_tokenizer.sh [OUT_DIR]       (default /tmp/distill-quality-cross)
#
# PROMPTS (150), ANSWER_TOKENS (128) and METHODS ("hard kd gkd") make a smaller run.
set -euo pipefail
PROMPTS=${PROMPTS:-150}
ANSWER_TOKENS=${ANSWER_TOKENS:-128}
METHODS=${METHODS:-hard kd gkd}
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/distill-quality-cross}
MODELS=${DISTILL_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/models
SMOL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA=$MODELS/gemma-3-270m-q4_k_m.gguf
cargo build --release --example distill --example train_quality
D=target/release/examples/distill
Q=target/release/examples/train_quality
mkdir -p "$OUT"

if [ ! -s "$OUT/split/test.jsonl" ]; then
  $D generate --provider local --model "$GEMMA" --num-examples "$PROMPTS" --top-logprobs 20 \
    --max-tokens "$ANSWER_TOKENS" --output "$OUT/teacher.jsonl" --resume
  $D data split "$OUT/teacher.jsonl" --out-dir "$OUT/split" --ratios 0.8,0,0.2
fi

COMMON=(--dataset "$OUT/split/train.jsonl" --student-model "$SMOL" --keep-layers 6
        --max-steps 40 --batch-size 8 --max-seq-len 256 --lr 6e-4 --warmup-steps 4 --save-every 0)
models=(--model "untrained=$SMOL@0,5,10,15,20,25")
for seed in 1 2 3; do
  for method in $METHODS; do
    case $method in
      hard) flags=(--loss ce) ;;
      kd) flags=(--loss kl --alpha 0.5) ;;
      gkd) flags=(--teacher-model "$GEMMA" --loss jsd --jsd-beta 0.5 --alpha 0.5
                  --on-policy 0.5 --on-policy-max-new-tokens 64) ;;
    esac
    run=$OUT/$method-$seed
    if [ ! -d "$run/final_model" ]; then
      start=$(date +%s)
      $D train "${COMMON[@]}" "${flags[@]}" --seed $seed --output-dir "$run" -q
      echo "$method seed $seed: $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
    fi
    models+=(--model "$method-$seed=$run/final_model")
  done
done
$Q --dataset "$OUT/split/test.jsonl" "${models[@]}" --json "$OUT/report.json" | tee "$OUT/table.md"
