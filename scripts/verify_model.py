#!/usr/bin/env python3
"""The lab manual's check of a trained student: load ./outputs/final_model with transformers,
tokenize a prompt through the chat template, generate, and print the answer.

    python scripts/verify_model.py [MODEL_DIR] [--prompt TEXT] [--max-new-tokens N]

Needs `transformers` and `torch` (the repo's .venv has both).
"""
import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", default="./outputs/final_model")
    parser.add_argument("--prompt", default="Explain in two sentences why the sky is blue.")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    model.eval()

    messages = [{"role": "user", "content": args.prompt}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = args.prompt
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    output = model.generate(
        **inputs,
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"model: {args.model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    print(f"prompt: {args.prompt}")
    print(f"answer: {answer}")


if __name__ == "__main__":
    main()
