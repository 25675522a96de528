"""Records llama.cpp's logits and greedy output on a GGUF, as a fixture for our decoder's parity
tests (crates/student/tests/llama_cpp_parity.rs); the tests read the JSON, not Python.

    .venv-llama/bin/python scripts/llama_cpp_logits.py MODEL.gguf OUT.json

For each prompt (the three chat prompts of crates/student/tests/fixtures/model/smollm2.json, as
token ids, and two plain-text prompts) llama.cpp continues greedily for 32 tokens, one token
per step (`greedy_ids`); then the prompt and that continuation are evaluated once more in one
batch with logits at every position, and each predicted position (the prompt's last, then every
generated token but the last) keeps its ten largest logits and the margin between the top two
(`steps`).

    .venv-llama/bin/python scripts/llama_cpp_logits.py SmolLM2-135M-Instruct.Q4_1.gguf \
        crates/student/tests/fixtures/llama_cpp/smollm2_q4_1.json
    distill export --model SmolLM2-135M-Instruct.Q4_1.gguf --format gguf --quant q8_0 \
        --output smollm2-q8_0.gguf
    .venv-llama/bin/python scripts/llama_cpp_logits.py smollm2-q8_0.gguf \
        crates/student/tests/fixtures/llama_cpp/smollm2_q8_0.json
    distill export --model SmolLM2-135M-Instruct.Q4_1.gguf --format gguf --quant f32 \
        --output smollm2-f32.gguf
    .venv-llama/bin/python scripts/llama_cpp_logits.py smollm2-f32.gguf \
        crates/student/tests/fixtures/llama_cpp/smollm2_f32.json

The exported files must be named as above: the stem becomes the file's `general.name`, and the
tests check that their own export has the recorded file's SHA-256.
"""
import hashlib
import json
import sys
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

NEW_TOKENS = 32
TOP = 10
PLAIN_PROMPTS = [
    "The three most important inventions of the twentieth century are",
    "def fibonacci(n):\n",
]

model_path = Path(sys.argv[1])
out_path = Path(sys.argv[2])
root = Path(__file__).resolve().parent.parent
chat = json.loads((root / "crates/student/tests/fixtures/model/smollm2.json").read_text())

llm = Llama(model_path=str(model_path), n_ctx=512, n_batch=512, n_threads=2, logits_all=True, verbose=False)
prompts = [case["prompt_ids"] for case in chat["generations"]]
prompts += [llm.tokenize(text.encode(), add_bos=False, special=False) for text in PLAIN_PROMPTS]

cases = []
for prompt_ids in prompts:
    llm.reset()
    generated = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        generated.append(int(token))
        if len(generated) == NEW_TOKENS:
            break
    llm.reset()
    llm.eval(prompt_ids + generated[:-1])
    steps = []
    for position in range(len(prompt_ids) - 1, len(prompt_ids) + len(generated) - 1):
        row = llm.scores[position]
        top = row.argsort()[::-1][:TOP]
        steps.append(
            {
                "top_ids": [int(i) for i in top],
                "top_logits": [round(float(row[i]), 5) for i in top],
                "margin": round(float(row[top[0]] - row[top[1]]), 5),
            }
        )
    # llama.cpp's batched pass and its one-token steps sum in different orders, so they may
    # pick differently where the top two are nearly tied, but only there.
    split = [s["margin"] for s, g in zip(steps, generated) if s["top_ids"][0] != g]
    assert all(m < 0.5 for m in split), f"llama.cpp's two passes disagree at margins {split}"
    cases.append({"prompt_ids": [int(i) for i in prompt_ids], "greedy_ids": generated, "steps": steps})

fixture = {
    "model": model_path.name,
    "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    "llama_cpp_python": llama_cpp.__version__,
    "n_threads": 2,
    "cases": cases,
}
out_path.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"{out_path}: {len(cases)} prompts, {sum(len(c['steps']) for c in cases)} positions")
