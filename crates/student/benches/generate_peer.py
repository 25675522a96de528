"""transformers' side of benches/generate.rs: batch 1, greedy, 128 new tokens, fp32, CPU.

    .venv/bin/python crates/student/benches/generate_peer.py [GGUF]

Prints tokens/s for SmolLM2-135M, its 6-layer student (layers 0, 5, ..., 25) and a randomly
initialised GPT-2 of distilgpt2's shape, the median of 5 timed runs after a warm-up, with the
same 32-token prompt as the Rust bench.
"""
import os, statistics, sys, time

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
home = os.environ.get("DISTILL_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "distill")
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(home, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
teacher = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
student = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
student.model.layers = torch.nn.ModuleList([student.model.layers[i] for i in range(0, 30, 5)])
for i, layer in enumerate(student.model.layers):
    layer.self_attn.layer_idx = i
student.config.num_hidden_layers = 6

torch.manual_seed(0)
distilgpt2 = GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)).eval()

ids = torch.tensor([[100 + 37 * i for i in range(32)]])
for name, model in [("smollm2_135m", teacher), ("student_6_layers", student), ("distilgpt2_shape", distilgpt2)]:
    def run():
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128,
                                  min_new_tokens=128, do_sample=False)
    run()
    times = []
    for _ in range(5):
        t = time.perf_counter(); out = run(); times.append(time.perf_counter() - t)
        assert out.shape[1] == 32 + 128
    print(f"{name}: {128 / statistics.median(times):.1f} tok/s (median of 5, {torch.get_num_threads()} threads)")

# Eight left-padded prompts (32 down to 28 tokens) decoded together, 64 new tokens each.
prompts = [[100 + 37 * i + b for i in range(32 - b % 5)] for b in range(8)]
width = max(map(len, prompts))
ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
def run():
    with torch.no_grad():
        return teacher.generate(ids, attention_mask=mask, max_new_tokens=64, min_new_tokens=64,
                                do_sample=False, pad_token_id=0)
run()
times = []
for _ in range(5):
    t = time.perf_counter(); out = run(); times.append(time.perf_counter() - t)
    assert out.shape[1] == width + 64
print(f"smollm2_135m batch 8: {8 * 64 / statistics.median(times):.1f} tok/s (median of 5, {torch.get_num_threads()} threads)")
