"""Seed corpus for the safetensors_header fuzz target: small valid files written by the
reference `safetensors` library (several dtypes, scalars, empty tensors, metadata, many
tensors), so the fuzzer starts from well-formed headers and mutates them.

    .venv/bin/python fuzz/seeds/safetensors_header.py fuzz/corpus/safetensors_header
"""
import os
import sys

import numpy as np
from safetensors.numpy import save

out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/safetensors_header"
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
seeds = {
    "one_f32": ({"w": rng.standard_normal((2, 3)).astype(np.float32)}, None),
    "dtypes": (
        {
            "a": np.arange(4, dtype=np.float16),
            "b": np.arange(3, dtype=np.int64),
            "c": np.array([True, False]),
            "d": np.arange(5, dtype=np.uint8),
            "e": np.arange(2, dtype=np.float64),
            "f": np.arange(6, dtype=np.int32).reshape(2, 3),
        },
        None,
    ),
    "scalar_and_empty": ({"s": np.array(1.5, dtype=np.float32), "z": np.zeros((0, 4), np.float32)}, None),
    "metadata": ({"x": np.ones((1, 1, 2), np.float32)}, {"format": "pt", "note": "seed"}),
    "many": ({f"layer.{i}.weight": np.full((i + 1,), i, np.float32) for i in range(12)}, None),
}
for name, (tensors, metadata) in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(save(tensors, metadata=metadata))
print(f"wrote {len(seeds)} seeds to {out}")
