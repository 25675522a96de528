#!/usr/bin/env python3
"""The transformers + PyTorch (eager) side of `benches/train.rs`: the same 6-layer SmolLM2 student
(layers 0, 5, ..., 25 of SmolLM2-135M-Instruct, fp32, CPU), AdamW, batch 8.

    python crates/student/benches/train_hf.py [--gguf PATH] [--dataset PATH] [--steps N]

Scenarios (tokens/s; real tokens, padding excluded):
  fixed_b8_t256     8 x 256 random tokens, loss on every position
  lab_variable      one epoch over the first 32 train examples of the generated lab dataset, in the
                    Trainer's default way: random order, each batch padded to its longest example
                    (DataCollatorForSeq2Seq), labels -100 on the prompt and the padding
  kd_online_teacher 8 x 256 random tokens, forward KL at T = 2 (x T^2) against the full teacher
                    run on every step, mixed 0.5/0.5 with cross-entropy
Run it in the same session as `cargo bench -p distill-student --bench train`.
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

BATCH, LEN, KEEP, EXAMPLES = 8, 256, [0, 5, 10, 15, 20, 25], 32


def load(gguf):
    folder, name = os.path.split(gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model, tokenizer


def student_of(gguf):
    model, _ = load(gguf)
    model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in KEEP])
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    model.config.num_hidden_layers = len(KEEP)
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = [model.config.layer_types[i] for i in KEEP]
    model.train()
    return model


def optimizer(model):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)


def step(model, opt, loss):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def fixed(gguf, steps):
    model = student_of(gguf)
    opt = optimizer(model)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, LEN), generator=g)

    def one():
        step(model, opt, model(input_ids=ids, labels=ids).loss)

    return BATCH * LEN / timed(one, 1, steps)


def lab_variable(gguf, dataset, epochs):
    model = student_of(gguf)
    _, tokenizer = load(gguf)
    opt = optimizer(model)
    rows = []
    with open(dataset) as f:
        for line in f:
            e = json.loads(line)
            if e.get("split") in (None, "train"):
                rows.append(e)
            if len(rows) == EXAMPLES:
                break
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seqs = []
    for e in rows:
        prompt = tokenizer.apply_chat_template(e["messages"], add_generation_prompt=True, tokenize=False)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(e["response"], add_special_tokens=False)["input_ids"]
        full = (p + r + [eos])[:LEN]
        labels = ([-100] * len(p) + r + [eos])[:LEN]
        seqs.append((full, labels))
    real = sum(len(f) for f, _ in seqs)
    g = torch.Generator().manual_seed(7)
    padded = [0]

    def epoch():
        order = torch.randperm(len(seqs), generator=g).tolist()
        for b in range(0, len(order), BATCH):
            chunk = [seqs[i] for i in order[b:b + BATCH]]
            width = max(len(f) for f, _ in chunk)
            padded[0] += width * len(chunk)
            ids = torch.tensor([f + [pad] * (width - len(f)) for f, _ in chunk])
            labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in chunk])
            mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f, _ in chunk])
            step(model, opt, model(input_ids=ids, attention_mask=mask, labels=labels).loss)

    seconds = timed(epoch, 1, epochs)
    return real / seconds, real, padded[0] / (epochs + 1)


def kd_online(gguf, steps):
    model = student_of(gguf)
    teacher, _ = load(gguf)
    teacher.eval()
    opt = optimizer(model)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, LEN), generator=g)
    t = 2.0

    def one():
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids).logits
        out = model(input_ids=ids, labels=ids)
        kl = F.kl_div(
            F.log_softmax(out.logits / t, -1).flatten(0, 1),
            F.log_softmax(teacher_logits / t, -1).flatten(0, 1),
            log_target=True,
            reduction="batchmean",
        ) * t * t
        step(model, opt, 0.5 * out.loss + 0.5 * kl)

    return BATCH * LEN / timed(one, 1, steps)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", default=os.path.expanduser("~/.cache/distill/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--dataset", default="datasets/generated/smollm2_lab.jsonl")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=["fixed", "lab_variable", "kd_online"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "fixed" in args.only:
        print(f"fixed_b8_t256: {fixed(args.gguf, args.steps):.1f} tok/s")
    if "lab_variable" in args.only and os.path.exists(args.dataset):
        rate, real, padded = lab_variable(args.gguf, args.dataset, 2)
        print(f"lab_variable (random batches, pad to longest): {rate:.1f} real tok/s "
              f"({real} real tokens, {padded:.0f} padded per epoch)")
    if "kd_online" in args.only:
        print(f"kd_online_teacher: {kd_online(args.gguf, args.steps):.1f} tok/s")


if __name__ == "__main__":
    main()
