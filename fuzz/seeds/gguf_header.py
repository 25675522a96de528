"""Writes the seed corpus of the gguf_header fuzz target with gguf-py (llama.cpp's own writer).

    .venv/bin/python fuzz/seeds/gguf_header.py

Small files with every metadata type, arrays, and tensors of each type our dequantizer handles,
so the fuzzer starts from valid structure.
"""
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFWriter
from gguf.quants import quantize

out = Path(__file__).resolve().parent.parent / "corpus/gguf_header"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

for i, kind in enumerate([T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]):
    path = out / f"seed_{i:02d}_{kind.name.lower()}.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_uint8("test.u8", 7)
    w.add_int16("test.i16", -3)
    w.add_float64("test.f64", 0.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo")
    w.add_array("test.arr", ["a", "b"])
    w.add_array("test.nums", [1, 2, 3])
    data = rng.standard_normal((2, 256)).astype(np.float32)
    if kind in (T.F32,):
        w.add_tensor("t.weight", data)
    elif kind == T.F16:
        w.add_tensor("t.weight", data.astype(np.float16))
    else:
        try:
            q = quantize(data, kind)
        except NotImplementedError:
            # gguf-py cannot quantize k-quants; random blocks are valid input for dequantization.
            block, size = GGML_QUANT_SIZES[kind]
            q = rng.integers(0, 256, (2, 256 // block * size), dtype=np.uint8)
        w.add_tensor("t.weight", q, raw_shape=q.shape, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
print(f"wrote {len(list(out.iterdir()))} seeds to {out}")
