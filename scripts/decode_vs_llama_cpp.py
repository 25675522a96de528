"""Batch-1 greedy decoding speed, distill against llama.cpp (llama-cpp-python) on the same GGUF
files, interleaved in rounds so both see the same machine (docs/benchmarks.md, issue 15).

    .venv-llama/bin/python scripts/decode_vs_llama_cpp.py \
        --distill target/release/examples/distill --rounds 3 MODEL.gguf [MODEL.gguf ...]

Each round runs, for each file, `distill chat --dtype native --ignore-eos` and then llama.cpp on
the same chat prompt (SmolLM2's ChatML with its default system message), both greedy, both on
--threads threads, both for --new-tokens tokens whatever the model says. The rate is the
decoding rate: tokens after the first over the time after the first (the first waits for the
prompt's prefill). Prints one line per run and a Markdown table of medians.
"""
import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

PROMPT = "Tell me a long story about a dragon who learns to read."
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SUMMARY = re.compile(r"(\d+) prompt \+ (\d+) new tokens; first token [\d.]+ s; ([\d.]+) tok/s")


def ours(binary: Path, model: Path, new_tokens: int, threads: int) -> tuple[float, int]:
    """distill chat's own decoding rate and prompt length."""
    result = subprocess.run(
        [str(binary), "chat", "--model", str(model), "--dtype", "native", "--ignore-eos",
         "--max-new-tokens", str(new_tokens), "--prompt", PROMPT],
        capture_output=True, text=True, check=True,
        # The decoder's pool takes libtorch's intra-op threads, which OMP_NUM_THREADS sets.
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    found = SUMMARY.search(result.stderr)
    assert found, result.stderr
    prompt, new, rate = int(found[1]), int(found[2]), float(found[3])
    assert new == new_tokens, f"distill generated {new} tokens"
    return rate, prompt


def theirs(llm: Llama, new_tokens: int) -> tuple[float, int]:
    """llama.cpp's decoding rate on the same chat prompt, and its length."""
    text = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n"
            "<|im_start|>assistant\n")
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.reset()
    count, first = 0, 0.0
    for _ in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == new_tokens:
            break
    return (new_tokens - 1) / (time.perf_counter() - first), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--distill", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    llms = {m: Llama(model_path=str(m), n_ctx=512, n_threads=args.threads, n_threads_batch=args.threads,
                     verbose=False) for m in args.models}
    rates = {m: ([], []) for m in args.models}
    for round_ in range(1, args.rounds + 1):
        for model in args.models:
            rate, prompt = ours(args.distill, model, args.new_tokens, args.threads)
            peer, peer_prompt = theirs(llms[model], args.new_tokens)
            assert prompt == peer_prompt, f"prompts differ: {prompt} and {peer_prompt} tokens"
            rates[model][0].append(rate)
            rates[model][1].append(peer)
            print(f"round {round_} {model.name}: distill {rate:.1f} tok/s, llama.cpp {peer:.1f} tok/s "
                  f"({prompt} prompt tokens)", flush=True)
    print(f"\nllama-cpp-python {llama_cpp.__version__}, {args.threads} threads, {args.new_tokens} new tokens, "
          f"medians of {args.rounds} rounds\n")
    print("| model | distill tok/s | llama.cpp tok/s | ratio |\n|---|---|---|---|")
    for model in args.models:
        a, b = statistics.median(rates[model][0]), statistics.median(rates[model][1])
        print(f"| {model.name} ({model.stat().st_size / 1e6:.1f} MB) | {a:.1f} | {b:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
