"""How GPT-4o's tokens (o200k_base) of a text align with GPT-2's tokens of the same text: the
share of GPT-2 tokens in one-to-one spans (soft labels from the stored top-k), one-to-many,
many-to-one and many-to-many spans, with the cut rule of distill_student::train::align (cut where
both sides have a token boundary, on byte lengths). Issue 16's measure for the lab's headline
pair, GPT-4o teaching distilgpt2.

Both vocabularies come offline from the npm package js-tiktoken (its `dist/ranks/*.js`);
tiktoken (PyPI) encodes with them. The texts are the answers of a distill dataset; o200k's
tokens of a text are its canonical encoding, which is what an API returns for text it samples
in all but rare cases.

    npm pack js-tiktoken@1.0.21 && tar xzf js-tiktoken-1.0.21.tgz      # into DIR/package
    python3 -m pip install tiktoken
    python3 scripts/alignment_o200k.py DIR/package DATASET.jsonl [MORE.jsonl ...]
"""
import base64
import json
import sys

import tiktoken


def encoding(package, name):
    """A tiktoken encoding from js-tiktoken's ranks file (lines `! OFFSET tok tok …`, base64)."""
    text = open(f"{package}/dist/ranks/{name}.js", encoding="utf-8").read()
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    ranks = {}
    for line in data["bpe_ranks"].split("\n"):
        if not line:
            continue
        _, offset, *tokens = line.split(" ")
        for i, token in enumerate(tokens):
            ranks[base64.b64decode(token)] = int(offset) + i
    return tiktoken.Encoding(name, pat_str=data["pat_str"], mergeable_ranks=ranks,
                             special_tokens=data["special_tokens"])


def align(t, s):
    spans, i, j, te, se, ti, si = [], 0, 0, 0, 0, 0, 0
    while i < len(t) or j < len(s):
        if te <= se and i < len(t):
            te += t[i]; i += 1
        if se < te and j < len(s):
            se += s[j]; j += 1
        if te == se:
            spans.append((i - ti, j - si)); ti, si = i, j
    return spans


package, datasets = sys.argv[1], sys.argv[2:]
teacher, student = encoding(package, "o200k_base"), encoding(package, "gpt2")
cases = {"1:1": 0, "1:n": 0, "n:1": 0, "n:m": 0}
examples = teacher_total = total = 0
for path in datasets:
    for line in open(path, encoding="utf-8"):
        text = json.loads(line)["response"]
        t = [len(teacher.decode_single_token_bytes(i)) for i in teacher.encode_ordinary(text)]
        s = [len(student.decode_single_token_bytes(i)) for i in student.encode_ordinary(text)]
        assert sum(t) == sum(s) == len(text.encode()), path
        for nt, ns in align(t, s):
            key = "1:1" if nt == ns == 1 else "1:n" if nt == 1 else "n:1" if ns == 1 else "n:m"
            cases[key] += ns
        examples += 1; teacher_total += len(t); total += len(s)
print(f"{examples} answers, {teacher_total} o200k tokens, {total} GPT-2 tokens")
for k, v in cases.items():
    print(f"  GPT-2 tokens in {k} spans: {v} ({100 * v / total:.1f} %)")
