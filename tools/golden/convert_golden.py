#!/usr/bin/python3
"""Golden f32 -> f16 / bf16 conversions for test/convert.test.ts.

Writes test/golden/convert_f32.bin: the codes numpy (np.float16, IEEE round-to-nearest-even)
and PyTorch (torch.bfloat16, RNE) produce for 4096 f32 inputs: edge values, crafted
halfway cases, log-uniform magnitudes and raw random bit patterns (NaNs included).
Not: a reference for fp8 (neither library has OCP FP8 here); the fp8 tests derive their
table from the bit-field definition instead.

Layout, little-endian: b"MOEG", u32 count, u32 f32_bits[count], u16 f16[count], u16 bf16[count].
Run once with Debian's interpreter:  /usr/bin/python3 tools/golden/convert_golden.py
"""
import os
import struct
import warnings

import numpy as np
import torch

COUNT = 4096
rng = np.random.default_rng(20240607)


def f32_from_bits(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


edges = [0.0, -0.0, 1.0, -1.0, 65504.0, -65504.0, 65519.0, 65520.0, 65536.0, 1e30, -1e30,
         np.inf, -np.inf, np.nan, 2.0 ** -14, 2.0 ** -24, -(2.0 ** -24), 2.0 ** -25, 3 * 2.0 ** -25,
         2.0 ** -26, 2.0 ** -149, 3.4028234663852886e38, -3.4028234663852886e38, 1.17549435e-38,
         0.1, 1 / 3, 448.0, 57344.0]
vals = np.array(edges, dtype=np.float32)
# f16 halfway cases: mantissa bit pattern ...1 followed by exactly one half ulp, and neighbours.
halves = []
for e in range(-24, 16):
    for m in rng.integers(0, 1024, size=6):
        base = (1024 + int(m)) * 2.0 ** (e - 10) if e >= -14 else int(m) * 2.0 ** -24
        ulp = 2.0 ** (max(e, -14) - 10)
        halves += [base + ulp / 2, -(base + ulp / 2)]
h = np.array(halves, dtype=np.float32)
hb = h.view(np.uint32)
near = np.concatenate([h, (hb + 1).view(np.float32), (hb - 1).view(np.float32)])
# bf16 halfway cases: low 16 bits exactly 0x8000.
bb = (rng.integers(0, 2 ** 32, size=200, dtype=np.uint64).astype(np.uint32) & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
bfh = bb.view(np.float32)
bfh = bfh[~np.isnan(bfh)]
logu = (rng.standard_normal(1200) * np.exp2(rng.uniform(-30, 20, 1200))).astype(np.float32)
n_rest = COUNT - len(vals) - len(near) - len(bfh) - len(logu)
raw = f32_from_bits(rng.integers(0, 2 ** 32, size=n_rest, dtype=np.uint64).astype(np.uint32))
x = np.concatenate([vals, near, bfh, logu, raw]).astype(np.float32)
assert len(x) == COUNT, len(x)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    f16 = x.astype(np.float16).view(np.uint16)
bf16 = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "golden", "convert_f32.bin")
with open(out, "wb") as f:
    f.write(b"MOEG")
    f.write(struct.pack("<I", COUNT))
    f.write(x.view(np.uint32).astype("<u4").tobytes())
    f.write(f16.astype("<u2").tobytes())
    f.write(bf16.astype("<u2").tobytes())
print(f"wrote {out}: {COUNT} values")
