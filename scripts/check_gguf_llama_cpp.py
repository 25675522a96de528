"""Checks a GGUF written by `distill export --format gguf` with llama.cpp (llama-cpp-python).

    .venv-llama/bin/python scripts/check_gguf_llama_cpp.py MODEL.gguf [EXPECTED.json]

For the three chat prompts of crates/student/tests/fixtures/model/smollm2.json it checks that
llama.cpp tokenizes the rendered prompt to the same ids, and prints llama.cpp's first 32 greedy
tokens; with EXPECTED.json (a list of token lists) it compares them and exits 1 on a mismatch.
"""
import json
import sys
from pathlib import Path

from llama_cpp import Llama

model_path = sys.argv[1]
fixture = json.loads((Path(__file__).resolve().parent.parent / "crates/student/tests/fixtures/model/smollm2.json").read_text())
llm = Llama(model_path=model_path, n_ctx=512, n_threads=2, verbose=False)
results = []
for case in fixture["generations"]:
    prompt_ids = case["prompt_ids"]
    text = llm.detokenize(prompt_ids, special=True).decode()
    same_tokens = llm.tokenize(text.encode(), add_bos=False, special=True) == prompt_ids
    llm.reset()
    out = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        out.append(token)
        if len(out) == 32:
            break
    results.append(out)
    print(json.dumps({"tokenizer_round_trip": same_tokens, "greedy": out}))
if len(sys.argv) > 2:
    expected = json.loads(Path(sys.argv[2]).read_text())
    matches = [a == b for a, b in zip(results, expected)]
    print("greedy equal:", matches)
    sys.exit(0 if all(matches) else 1)
