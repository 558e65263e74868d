// encodeArray's bit-rounding fast path for f16 / bf16 at scale 1 (src/core/dtype.ts) against the
// scalar reference `encode`: every f16/bf16 boundary region (each code's value, the midpoints to
// its neighbours and one f32 ulp either side), subnormals, overflow, ±0, ±Inf, NaN of both signs,
// and 2^20 random f32 bit patterns.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decode, encode, encodeArray, type NarrowFloat } from "../src/core/dtype.js";

function check(fmt: NarrowFloat, bits: Uint32Array): void {
  const x = new Float32Array(bits.buffer);
  const got = new Uint16Array(x.length);
  encodeArray(fmt, got, x);
  for (let i = 0; i < x.length; i++) {
    const want = encode(fmt, x[i]!, bits[i]! >>> 31 === 1);
    if (got[i] !== want) assert.fail(`${fmt}: bits 0x${bits[i]!.toString(16)} (${x[i]}) → 0x${got[i]!.toString(16)}, encode gives 0x${want.toString(16)}`);
  }
}

function boundaryBits(fmt: NarrowFloat): Uint32Array {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  const out: number[] = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7f7fffff, 0xff7fffff];
  for (let c = 0; c < (fmt === "f16" ? 0x7c00 : 0x7f80); c++) {
    const v = decode(fmt, c), next = decode(fmt, c + 1);
    for (const t of [v, (v + next) / 2]) {
      f[0] = t;
      const b = u[0]!;
      for (const d of [-1, 0, 1]) for (const sgn of [0, 0x80000000]) out.push(((b + d) >>> 0 | sgn) >>> 0);
    }
  }
  return Uint32Array.from(out);
}

for (const fmt of ["f16", "bf16"] as const) {
  test(`encodeArray ${fmt} (bit rounding) == encode at every boundary and on random bits`, () => {
    check(fmt, boundaryBits(fmt));
    const r = new Uint32Array(1 << 20);
    let s = 12345;
    for (let i = 0; i < r.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      r[i] = (s ^ (s >>> 11) ^ Math.imul(i, 2654435761)) >>> 0;
    }
    check(fmt, r);
    // values in the usual weight range (|x| < 1), where most real tensors live
    const w = new Float32Array(1 << 16).map((_, i) => Math.sin(i) * 2 ** -((i % 40) - 4));
    check(fmt, new Uint32Array(w.buffer));
  });
}
