"""The official `openai` package against `distill serve`: every call a user makes parses.

Run by `cargo xtask test-openai`, which starts the server; alone:
    python scripts/openai_check.py http://127.0.0.1:8080/v1 MODEL
"""

import sys

import openai

url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=url, api_key="not-needed")
messages = [{"role": "user", "content": "What is the capital of France?"}]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        sys.exit(f"openai check failed: {what}")
    checks += 1


# Models.
models = client.models.list()
check([m.id for m in models.data] == [model], f"models.list gives {models.data}")

# A whole answer.
whole = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
choice = whole.choices[0]
check(choice.message.role == "assistant" and choice.message.content, "a chat answer has content")
check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason}")
check(whole.usage.completion_tokens > 0 and whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage adds up")

# Streamed: the same text, then the usage chunk.
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
)
pieces, usage, finish = [], None, None
for chunk in stream:
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
check("".join(pieces) == choice.message.content, f"streamed {''.join(pieces)!r} against {choice.message.content!r}")
check(finish == choice.finish_reason, "the streamed finish reason")
check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens, "the streamed usage")

# Log-probabilities.
scored = client.chat.completions.create(
    model=model, messages=messages, max_tokens=12, temperature=0, logprobs=True, top_logprobs=5
)
content = scored.choices[0].logprobs.content
check(len(content) > 0, "logprobs content")
for entry in content:
    check(len(entry.top_logprobs) == 5, "five alternatives per token")
    check(entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob, "alternatives most likely first")
    check(abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-6, "greedy picks the most likely token")
check("".join(e.token for e in content) == scored.choices[0].message.content, "tokens spell the answer")

# Plain completions.
text = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2)
check(text.choices[0].text and len(text.choices[0].logprobs.tokens) == 5, "a text completion with logprobs")

# Errors raise the package's own exceptions.
try:
    client.chat.completions.create(model="gpt-4o", messages=messages)
    check(False, "an unknown model is refused")
except openai.NotFoundError as e:
    check(e.status_code == 404, "404 for an unknown model")
try:
    client.chat.completions.create(model=model, messages=messages, temperature=5)
    check(False, "temperature 5 is refused")
except openai.BadRequestError as e:
    check(e.body["param"] == "temperature", f"the error names its param: {e.body}")

print(f"openai {openai.__version__}: {checks} checks passed against {url} ({model})")
