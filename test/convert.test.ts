// Tests of the dtype conversions (ConvertKernels and src/core/dtype.ts): every FP8 code
// against a table derived here from the OCP bit-field definition, round trips, RNE ties,
// saturation, NaN, ±0, subnormal boundaries; exhaustive bf16/f16 round trips; f16/bf16
// against numpy/PyTorch goldens (tools/golden/convert_golden.py); native == ref bitwise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { backends, assertKernelError, rng, randn } from "./util.js";
import { decode, encode, maxFinite, type NarrowFloat } from "../src/core/dtype.js";
import type { Backend, Fp8Format } from "../src/backend/spec.js";

const { ref, natives } = backends();
const all: { label: string; be: Backend }[] = [{ label: "ref", be: ref }, ...natives.slice(0, 2)];

const toBits = (v: number): number => new Uint32Array(Float32Array.of(v).buffer)[0]!;
const fromBits = (u: number): number => new Float32Array(Uint32Array.of(u >>> 0).buffer)[0]!;
const bitsView = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);
const fp8Name = (f: Fp8Format): NarrowFloat => (f === "e4m3" ? "fp8_e4m3" : "fp8_e5m2");

/** The OCP FP8 value of a code, straight from the bit fields (independent of src/core/dtype.ts). */
function ocpFp8(code: number, f: Fp8Format): number {
  const s = code >> 7 ? -1 : 1;
  if (f === "e4m3") {
    const E = (code >> 3) & 15, M = code & 7;
    if (E === 15 && M === 7) return NaN;
    return E === 0 ? s * 2 ** -6 * (M / 8) : s * 2 ** (E - 7) * (1 + M / 8);
  }
  const E = (code >> 2) & 31, M = code & 3;
  if (E === 31) return M === 0 ? s * Infinity : NaN;
  return E === 0 ? s * 2 ** -14 * (M / 4) : s * 2 ** (E - 15) * (1 + M / 4);
}

/** IEEE binary16 value from its bit fields. */
function ieeeF16(code: number): number {
  const s = code >> 15 ? -1 : 1, E = (code >> 10) & 31, M = code & 1023;
  if (E === 31) return M === 0 ? s * Infinity : NaN;
  return E === 0 ? s * 2 ** -14 * (M / 1024) : s * 2 ** (E - 15) * (1 + M / 1024);
}

function encodeWith(be: Backend, fmt: NarrowFloat, x: Float32Array, scale?: number): Uint8Array | Uint16Array {
  if (fmt === "bf16" || fmt === "f16") {
    const out = new Uint16Array(x.length);
    if (fmt === "bf16") be.f32ToBf16(out, x);
    else be.f32ToF16(out, x);
    return out;
  }
  const out = new Uint8Array(x.length);
  be.f32ToFp8(out, x, fmt === "fp8_e4m3" ? "e4m3" : "e5m2", scale);
  return out;
}

function decodeWith(be: Backend, fmt: NarrowFloat, c: Uint8Array | Uint16Array, scale?: number): Float32Array {
  const out = new Float32Array(c.length);
  if (fmt === "bf16") be.bf16ToF32(out, c as Uint16Array);
  else if (fmt === "f16") be.f16ToF32(out, c as Uint16Array);
  else be.fp8ToF32(out, c as Uint8Array, fmt === "fp8_e4m3" ? "e4m3" : "e5m2", scale);
  return out;
}

function assertCodes(actual: ArrayLike<number>, expected: ArrayLike<number>, input: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}[${i}]: input ${input[i]} (0x${toBits(input[i]!).toString(16)}) → 0x${actual[i]!.toString(16)}, expected 0x${expected[i]!.toString(16)}`);
    }
  }
}

for (const f of ["e4m3", "e5m2"] as Fp8Format[]) {
  const fmt = fp8Name(f);
  const isNaNCode = (c: number): boolean => Number.isNaN(ocpFp8(c, f));

  test(`fp8 ${f}: all 256 codes decode to the OCP values`, () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (let c = 0; c < 256; c++) assert.ok(Object.is(decode(fmt, c), ocpFp8(c, f)), `dtype.decode 0x${c.toString(16)}`);
    for (const { label, be } of all) {
      const out = decodeWith(be, fmt, codes);
      for (let c = 0; c < 256; c++) {
        const want = ocpFp8(c, f);
        if (Number.isNaN(want)) {
          assert.ok(Number.isNaN(out[c]!), `${label} 0x${c.toString(16)} NaN`);
          assert.equal(toBits(out[c]!) >>> 31, c >> 7, `${label} NaN sign of 0x${c.toString(16)}`);
        } else assert.ok(Object.is(out[c], want), `${label} 0x${c.toString(16)}: ${out[c]} vs ${want}`);
      }
    }
    // Spot values from the OCP spec.
    if (f === "e4m3") {
      assert.equal(ocpFp8(0x7e, f), 448);
      assert.equal(ocpFp8(0x01, f), 2 ** -9);
      assert.equal(ocpFp8(0x08, f), 2 ** -6);
      assert.equal([...Array(256).keys()].filter(isNaNCode).join(), "127,255");
    } else {
      assert.equal(ocpFp8(0x7b, f), 57344);
      assert.equal(ocpFp8(0x01, f), 2 ** -16);
      assert.equal(ocpFp8(0x7c, f), Infinity);
      assert.equal([...Array(256).keys()].filter(isNaNCode).length, 6);
    }
    assert.equal(maxFinite(fmt), f === "e4m3" ? 448 : 57344);
  });

  test(`fp8 ${f}: encode(decode(c)) == c for every non-NaN code`, () => {
    const codes = [...Array(256).keys()].filter((c) => !isNaNCode(c));
    const x = Float32Array.from(codes, (c) => ocpFp8(c, f));
    for (const c of codes) assert.equal(encode(fmt, ocpFp8(c, f)), c, `dtype.encode of 0x${c.toString(16)}`);
    for (const { label, be } of all) assertCodes(encodeWith(be, fmt, x), codes, x, `${label} ${f}`);
  });

  test(`fp8 ${f}: RNE ties, saturation, NaN, ±0, subnormal boundary`, () => {
    const xs: number[] = [];
    const want: number[] = [];
    const push = (v: number, c: number): void => {
      xs.push(v);
      want.push(c);
    };
    // Every pair of adjacent finite codes: the midpoint goes to the even code, one f32 ulp
    // either side goes to the nearer code. Mirrored for negative values.
    const maxCode = f === "e4m3" ? 0x7e : 0x7b;
    for (let c = 0; c < maxCode; c++) {
      const lo = ocpFp8(c, f), hi = ocpFp8(c + 1, f), mid = (lo + hi) / 2;
      assert.equal(Math.fround(mid), mid);
      const even = c % 2 === 0 ? c : c + 1;
      for (const sg of [0, 0x80]) {
        const s = sg ? -1 : 1;
        push(s * mid, even | sg);
        push(s * fromBits(toBits(mid) + 1), (c + 1) | sg);
        push(s * fromBits(toBits(mid) - 1), c === 0 && mid === fromBits(1) ? sg : c | sg);
      }
    }
    // Below half the smallest subnormal → ±0; exactly ±0 → ±0.
    const minSub = ocpFp8(1, f);
    push(minSub / 4, 0);
    push(-minSub / 4, 0x80);
    push(0, 0);
    push(-0, 0x80);
    push(fromBits(1), 0); // smallest f32 subnormal
    // Saturation (finite overflow → ±max); e4m3 has no Inf, e5m2 keeps it.
    const max = maxFinite(fmt);
    for (const v of [max * 1.01, max * 1.0625, max * 1.07, max * 2, 1e30, 3.4028234663852886e38]) {
      push(v, maxCode);
      push(-v, maxCode | 0x80);
    }
    push(Infinity, f === "e4m3" ? 0x7e : 0x7c);
    push(-Infinity, f === "e4m3" ? 0xfe : 0xfc);
    const x = Float32Array.from(xs);
    // NaN of both signs.
    const nanIn = new Float32Array(2);
    bitsView(nanIn).set([0x7fc00001, 0xff800001]);
    const nanWant = f === "e4m3" ? [0x7f, 0xff] : [0x7e, 0xfe];
    for (const { label, be } of all) {
      assertCodes(encodeWith(be, fmt, x), want, x, `${label} ${f}`);
      assertCodes(encodeWith(be, fmt, nanIn), nanWant, nanIn, `${label} ${f} NaN`);
    }
  });

  test(`fp8 ${f}: scale divides on encode and multiplies on decode`, () => {
    const x = Float32Array.of(1, -3, 448 * 4, 1e-3, 0.5);
    for (const scale of [4, 0.25, 0.37]) {
      const s = Math.fround(scale);
      const expect = Array.from(x, (v) => encode(fmt, Math.fround(v / s)));
      const codes = Uint8Array.from([0x38, 0xb8, 0x01, 0x7b, 0x55]);
      const dexp = Array.from(codes, (c) => Math.fround(ocpFp8(c, f) * s));
      for (const { label, be } of all) {
        assertCodes(encodeWith(be, fmt, x, scale), expect, x, `${label} ${f} scale ${scale}`);
        assert.deepEqual(Array.from(decodeWith(be, fmt, codes, scale)), dexp, `${label} decode scale ${scale}`);
      }
    }
    // Closed form: 448·4 / 4 = 448 is e4m3 max exactly.
    assert.equal(encodeWith(ref, "fp8_e4m3", Float32Array.of(1792), 4)[0], 0x7e);
  });
}

for (const fmt of ["bf16", "f16"] as const) {
  test(`${fmt}: exhaustive decode and round trip of all 65536 codes`, () => {
    const codes = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const expectVal = (c: number): number => (fmt === "f16" ? ieeeF16(c) : fromBits(c << 16));
    for (const { label, be } of all) {
      const x = decodeWith(be, fmt, codes);
      const xb = bitsView(x);
      const back = encodeWith(be, fmt, x);
      for (let c = 0; c < 65536; c++) {
        const want = expectVal(c);
        if (Number.isNaN(want)) {
          assert.ok(Number.isNaN(x[c]!), `${label} ${fmt} 0x${c.toString(16)} decodes to NaN`);
          assert.equal(xb[c]! >>> 31, c >> 15, `${label} NaN sign`);
          assert.equal(back[c], (c & 0x8000) | (fmt === "bf16" ? 0x7fc0 : 0x7e00), `${label} NaN re-encodes to the quiet NaN`);
          continue;
        }
        if (!Object.is(x[c], want)) assert.fail(`${label} ${fmt} decode 0x${c.toString(16)}: ${x[c]} vs ${want}`);
        if (back[c] !== c) assert.fail(`${label} ${fmt} round trip 0x${c.toString(16)} → 0x${back[c]!.toString(16)}`);
      }
      if (fmt === "bf16") for (let c = 0; c < 65536; c++) if (xb[c] !== c << 16 >>> 0) assert.fail(`${label} bf16 decode is not the bit copy at 0x${c.toString(16)}`);
    }
  });

  test(`${fmt}: RNE on crafted halfway f32 values, overflow, subnormals`, () => {
    const xs: number[] = [];
    const want: number[] = [];
    const val = (c: number): number => (fmt === "f16" ? ieeeF16(c) : fromBits(c << 16));
    const maxCode = fmt === "f16" ? 0x7bff : 0x7f7f;
    for (let c = 0; c < maxCode; c++) {
      const lo = val(c), hi = val(c + 1), mid = (lo + hi) / 2;
      if (Math.fround(mid) !== mid) assert.fail(`midpoint not an f32 at 0x${c.toString(16)}`);
      const even = c % 2 === 0 ? c : c + 1;
      xs.push(mid, -mid, fromBits(toBits(mid) + 1), fromBits(toBits(mid) - 1));
      want.push(even, even | 0x8000, c + 1, c === 0 && toBits(mid) === 1 ? 0 : c);
    }
    // Overflow: above max + half ulp → Inf (IEEE); the tie at max + half ulp goes to Inf (even).
    const max = val(maxCode), halfUlp = (val(maxCode) - val(maxCode - 1)) / 2;
    xs.push(max, max + halfUlp, -(max + halfUlp), Infinity, -Infinity);
    want.push(maxCode, 0x7c00 * Number(fmt === "f16") + 0x7f80 * Number(fmt === "bf16"), fmt === "f16" ? 0xfc00 : 0xff80, fmt === "f16" ? 0x7c00 : 0x7f80, fmt === "f16" ? 0xfc00 : 0xff80);
    const x = Float32Array.from(xs);
    for (const { label, be } of all) assertCodes(encodeWith(be, fmt, x), want, x, `${label} ${fmt}`);
  });
}

test("f16 and bf16 match numpy / PyTorch goldens (tools/golden/convert_golden.py)", () => {
  const buf = readFileSync(new URL("../../test/golden/convert_f32.bin", import.meta.url));
  assert.equal(buf.subarray(0, 4).toString("latin1"), "MOEG");
  const n = buf.readUInt32LE(4);
  const x = new Float32Array(n), f16 = new Uint16Array(n), bf16 = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    bitsView(x)[i] = buf.readUInt32LE(8 + 4 * i);
    f16[i] = buf.readUInt16LE(8 + 4 * n + 2 * i);
    bf16[i] = buf.readUInt16LE(8 + 6 * n + 2 * i);
  }
  assert.equal(n, 4096);
  let nans = 0;
  for (const { label, be } of all) {
    for (const [fmt, golden] of [["f16", f16], ["bf16", bf16]] as const) {
      const got = encodeWith(be, fmt, x);
      for (let i = 0; i < n; i++) {
        const nanCode = fmt === "f16" ? (golden[i]! & 0x7c00) === 0x7c00 && (golden[i]! & 0x3ff) !== 0 : (golden[i]! & 0x7f80) === 0x7f80 && (golden[i]! & 0x7f) !== 0;
        if (nanCode) {
          nans++;
          // Both NaN; numpy keeps the sign (compared for f16), torch canonicalises it (not compared).
          const expectQuiet = fmt === "f16" ? (golden[i]! & 0x8000) | 0x7e00 : (got[i]! & 0x8000) | 0x7fc0;
          assert.equal(got[i], expectQuiet, `${label} ${fmt} NaN at ${i}`);
        } else if (got[i] !== golden[i]) {
          assert.fail(`${label} ${fmt}[${i}]: ${x[i]} (0x${bitsView(x)[i]!.toString(16)}) → 0x${got[i]!.toString(16)}, golden 0x${golden[i]!.toString(16)}`);
        }
      }
    }
  }
  assert.ok(nans > 0, "golden includes NaN inputs");
});

test("native == ref bitwise over large random arrays (1 and 2 threads, scale ≠ 1)", () => {
  const n = 1 << 17; // above the native parallel threshold
  const r = rng(7);
  const x = new Float32Array(n);
  const xb = bitsView(x);
  const normals = randn(Float32Array, n, 11);
  for (let i = 0; i < n; i++) {
    const k = i % 4;
    if (k === 0) xb[i] = Math.floor(r() * 2 ** 32); // every class: NaN, Inf, subnormal, huge
    else x[i] = normals[i]! * 2 ** Math.floor(r() * 60 - 40);
  }
  const codes16 = Uint16Array.from({ length: n }, () => Math.floor(r() * 65536));
  const codes8 = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const cases: { fmt: NarrowFloat; scale?: number }[] = [
    { fmt: "bf16" },
    { fmt: "f16" },
    { fmt: "fp8_e4m3" },
    { fmt: "fp8_e4m3", scale: 1 / 448 },
    { fmt: "fp8_e4m3", scale: 37.5 },
    { fmt: "fp8_e5m2" },
    { fmt: "fp8_e5m2", scale: 0.013 },
    { fmt: "fp8_e5m2", scale: 3e4 },
  ];
  for (const { fmt, scale } of cases) {
    const enc = encodeWith(ref, fmt, x, scale);
    const codes = fmt === "bf16" || fmt === "f16" ? codes16 : codes8;
    const dec = bitsView(decodeWith(ref, fmt, codes, scale));
    for (const { label, be } of natives.slice(0, 2)) {
      assertCodes(encodeWith(be, fmt, x, scale), enc, x, `${label} encode ${fmt} scale ${scale}`);
      const got = bitsView(decodeWith(be, fmt, codes, scale));
      for (let i = 0; i < n; i++) if (got[i] !== dec[i]) assert.fail(`${label} decode ${fmt} scale ${scale} [${i}] code 0x${codes[i]!.toString(16)}: 0x${got[i]!.toString(16)} vs ref 0x${dec[i]!.toString(16)}`);
    }
  }
});

test("convert: bad arguments are KernelArgErrors", () => {
  for (const { be } of all) {
    assertKernelError(() => be.f32ToBf16(new Uint16Array(3), new Float32Array(4)), /out has 3 elements, expected 4/);
    assertKernelError(() => be.f32ToF16(new Uint8Array(4) as unknown as Uint16Array, new Float32Array(4)), /out must be a Uint16Array/);
    assertKernelError(() => be.bf16ToF32(new Float32Array(4), new Int16Array(4) as unknown as Uint16Array), /x must be a Uint16Array/);
    assertKernelError(() => be.f16ToF32(new Float64Array(4) as unknown as Float32Array, new Uint16Array(4)), /Float/);
    assertKernelError(() => be.f32ToFp8(new Uint8Array(4), new Float32Array(4), "e3m4" as Fp8Format), /format must be/);
    assertKernelError(() => be.f32ToFp8(new Uint8Array(4), new Float32Array(4), "e4m3", 0), /scale must be/);
    assertKernelError(() => be.fp8ToF32(new Float32Array(4), new Uint8Array(4), "e5m2", -1), /scale must be/);
    assertKernelError(() => be.fp8ToF32(new Float32Array(4), new Uint8Array(4), "e5m2", 1e-50), /scale must be/);
    assertKernelError(() => be.fp8ToF32(new Float32Array(4), new Uint8Array(4), "e5m2", NaN), /scale must be/);
    const buf = new ArrayBuffer(64);
    assertKernelError(() => be.f32ToBf16(new Uint16Array(buf, 0, 4), new Float32Array(buf, 4, 4)), /overlap/);
    assertKernelError(() => be.fp8ToF32(new Float32Array(buf, 0, 4), new Uint8Array(buf, 8, 4), "e4m3"), /overlap/);
  }
});
