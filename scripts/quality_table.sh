#!/usr/bin/env bash
# Issue 16's distillation-quality table for one pair: a teacher answers the lab prompts
# in-process (greedy, top-20 log-probabilities with their bytes; a fifth held out by a hash of
# the id) and teaches a 6-layer SmolLM2 student (every fifth layer of SmolLM2-135M-Instruct).
# Methods at equal steps, three seeds each, scored on the held-out prompts by train_quality:
#   hard  --loss ce                                  (hard labels only)
#   kd    --loss kl --alpha 0.5                      (stored top-20: rest bucket; aligned on
#                                                     bytes for Gemma)
#   gkd   --teacher-model … --loss jsd --alpha 0.5 --on-policy 0.5
#         (half the batches answered by the student and scored by the teacher)
#
#   scripts/quality_table.sh same|cross [OUT_DIR]
#     same   SmolLM2-135M-Instruct teaches (the same tokenizer)
#     cross  Gemma 3 270M (base; SentencePiece, 262,144 tokens) teaches (another tokenizer)
#
# PROMPTS (150), ANSWER_TOKENS (128) and METHODS ("hard kd gkd") make a smaller run. The full
# same-tokenizer run takes about an hour on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIR=${1:?give the pair: same or cross}
PROMPTS=${PROMPTS:-150}
ANSWER_TOKENS=${ANSWER_TOKENS:-128}
METHODS=${METHODS:-hard kd gkd}
MODELS=${DISTILL_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/models
SMOL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
case $PAIR in
  same) TEACHER=$SMOL ;;
  cross) TEACHER=$MODELS/gemma-3-270m-q4_k_m.gguf ;;
  *) echo "the pair is same or cross, not $PAIR" >&2; exit 2 ;;
esac
OUT=${2:-/tmp/distill-quality-$PAIR}
cargo build --release --example distill --example train_quality
D=target/release/examples/distill
Q=target/release/examples/train_quality
mkdir -p "$OUT"

if [ ! -s "$OUT/split/test.jsonl" ]; then
  $D generate --provider local --model "$TEACHER" --num-examples "$PROMPTS" --top-logprobs 20 \
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
      gkd) flags=(--teacher-model "$TEACHER" --loss jsd --jsd-beta 0.5 --alpha 0.5
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
