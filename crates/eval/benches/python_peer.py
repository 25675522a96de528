#!/usr/bin/env python3
"""Times the Python references on the same 10,000 pairs as benches/metrics.rs.

    .venv/bin/python crates/eval/benches/python_peer.py [--repeats 3]

The pairs are built from tests/fixtures/pairs.jsonl exactly as the Rust bench
builds them (see `bench_pairs` there): every fixture pair except the very long
ones forms a pool P, and pair i joins P[i % |P|] and P[(i * 7919 + 13) % |P|]
with a space. It prints the scores too, so that the Rust bench's scores can be
compared with them.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
N_PAIRS = 10_000


def bench_pairs():
    pool = []
    with open(FIXTURES / "pairs.jsonl", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            if p["kind"] != "long":
                pool.append((p["hyp"], p["ref"]))
    hyps, refs = [], []
    for i in range(N_PAIRS):
        a = pool[i % len(pool)]
        b = pool[(i * 7919 + 13) % len(pool)]
        hyps.append(a[0] + " " + b[0])
        refs.append(a[1] + " " + b[1])
    return hyps, refs


def clear_caches():
    # sacrebleu memoises tokenization (functools.lru_cache); a warm cache would
    # time a different, cheaper computation than the first call does.
    Tokenizer13a.__call__.cache_clear()
    TokenizerRegexp.__call__.cache_clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    hyps, refs = bench_pairs()

    bleu_times, rouge_times = [], []
    for _ in range(args.repeats):
        clear_caches()
        t0 = time.perf_counter()
        bleu = sacrebleu.corpus_bleu(hyps, [refs])
        bleu_times.append(time.perf_counter() - t0)

        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        t0 = time.perf_counter()
        scores = [scorer.score(r, h) for h, r in zip(hyps, refs)]
        rouge_times.append(time.perf_counter() - t0)

    means = {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in ["rouge1", "rouge2", "rougeL"]}
    print(json.dumps({
        "pairs": len(hyps),
        "sacrebleu": sacrebleu.__version__,
        "bleu": bleu.score,
        "rouge_mean_f": means,
        "bleu_seconds": {"min": min(bleu_times), "median": statistics.median(bleu_times)},
        "rouge_seconds": {"min": min(rouge_times), "median": statistics.median(rouge_times)},
    }, indent=1))


if __name__ == "__main__":
    main()
