// Tests for the ops kernels: native (1 and 2 threads) against ref over a shape table
// from tiny/odd to realistic, bitwise thread-count independence, finite-difference
// gradient checks in f64 on ref for every backward, closed forms, and bad input.
// Not: benchmarks (see bench/), or tests of other kernel areas.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Backend, FArr, GeluApprox, RopeParams } from "../src/backend/spec.js";
import { erf, erfc } from "../src/backend/ref/ops.js";
import { assertClose, assertExact, assertKernelError, backends, dot, numericGrad, randInt, randn } from "./util.js";

const { ref, natives: allNatives } = backends();
// Ops do not touch the GEMM path: the 1- and 2-thread engines cover them.
const natives = allNatives.filter((n) => n.label === "native-1t" || n.label === "native-2t");
const nat2 = natives[1]!.be;

/** Native f32 vs the ref (f64 accumulation, f32 storage): within 1e-5 relative. */
const TOLN = { rtol: 1e-5, atol: 1e-6 };
/** Analytic vs central finite differences in f64. */
const TOLFD = { rtol: 1e-6, atol: 1e-7 };

// One shared pool of normal samples; inputs are slices of it (fast for MB-sized cases).
const POOL = randn(Float32Array, 1 << 22, 12345);
function rnd(n: number, seed: number, std = 1): Float32Array {
  assert.ok(n <= POOL.length);
  const off = (seed * 104729) % (POOL.length - n + 1);
  const a = POOL.slice(off, off + n);
  if (std !== 1) for (let i = 0; i < n; i++) a[i] = a[i]! * std;
  return a;
}
const z = (n: number) => new Float32Array(n);

type Run = (be: Backend) => ArrayLike<number>[];

/** assertClose that also requires ±Inf in `want` to be matched exactly (util's assertClose treats Inf−Inf as an error). */
function closeInf(got: ArrayLike<number>, want: ArrayLike<number>, tol: { rtol: number; atol: number }, what: string): void {
  const g = Float64Array.from(got), w = Float64Array.from(want);
  for (let i = 0; i < w.length; i++) {
    if (w[i] === Infinity || w[i] === -Infinity) {
      assert.equal(g[i], w[i], `${what}[${i}]`);
      g[i] = w[i] = 0;
    }
  }
  assertClose(g, w, tol, what);
}

/** Runs `run` on ref and every native; natives ≈ ref, and native-1t ≡ native-2t bitwise. */
function compare(name: string, run: Run, tol = TOLN): void {
  const want = run(ref);
  const got = natives.map((n) => run(n.be));
  got.forEach((outs, k) => outs.forEach((o, i) => closeInf(o, want[i]!, tol, `${name} ${natives[k]!.label} output ${i}`)));
  for (let k = 1; k < got.length; k++) got[k]!.forEach((o, i) => assertExact(o, got[0]![i]!, `${name} ${natives[k]!.label} vs 1 thread, output ${i}`));
}

// ---------------------------------------------------------------------------
describe("ops: native vs ref", () => {
  const rowShapes: [number, number][] = [
    [1, 1],
    [3, 7],
    [5, 33],
    [17, 257],
    [512, 4096],
  ];

  test("embedding forward/backward", () => {
    for (const [V, C, N] of [
      [1, 1, 1],
      [5, 7, 3],
      [50, 33, 40],
      [1000, 512, 512],
    ] as const) {
      const wte = rnd(V * C, 1), dout = rnd(N * C, 2), dwte0 = rnd(V * C, 3);
      const ids = randInt(N, V, 4);
      compare(`embeddingForward V${V} C${C} N${N}`, (be) => {
        const out = z(N * C);
        be.embeddingForward(out, ids, wte, V, C);
        return [out];
      });
      compare(`embeddingBackward V${V} C${C} N${N}`, (be) => {
        const dwte = dwte0.slice();
        be.embeddingBackward(dwte, dout, ids, V, C);
        return [dwte];
      });
    }
  });

  test("rmsnorm forward/backward", () => {
    for (const [N, C] of rowShapes) {
      const x = rnd(N * C, 5, 2), w = rnd(C, 6), dout = rnd(N * C, 7), dw0 = rnd(C, 8);
      compare(`rmsnormForward ${N}x${C}`, (be) => {
        const out = z(N * C), rstd = z(N);
        be.rmsnormForward(out, rstd, x, w, N, C, 1e-5);
        return [out, rstd];
      });
      const rstd = z(N);
      ref.rmsnormForward(z(N * C), rstd, x, w, N, C, 1e-5);
      compare(`rmsnormBackward ${N}x${C}`, (be) => {
        const dx = z(N * C), dw = dw0.slice();
        be.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
        return [dx, dw];
      });
    }
  });

  test("layernorm forward/backward", () => {
    for (const [N, C] of rowShapes) {
      const x = rnd(N * C, 9, 2), w = rnd(C, 10), b = rnd(C, 11), dout = rnd(N * C, 12);
      for (let i = 0; i < x.length; i++) x[i] = x[i]! + 3; // a non-zero mean
      const dw0 = rnd(C, 13), db0 = rnd(C, 14);
      compare(`layernormForward ${N}x${C}`, (be) => {
        const out = z(N * C), mean = z(N), rstd = z(N);
        be.layernormForward(out, mean, rstd, x, w, b, N, C, 1e-5);
        return [out, mean, rstd];
      });
      const mean = z(N), rstd = z(N);
      ref.layernormForward(z(N * C), mean, rstd, x, w, b, N, C, 1e-5);
      compare(`layernormBackward ${N}x${C}`, (be) => {
        const dx = z(N * C), dw = dw0.slice(), db = db0.slice();
        be.layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C);
        return [dx, dw, db];
      });
    }
  });

  test("rope forward/backward, out-of-place and in place", () => {
    const cases: RopeParams[] = [
      { B: 1, T: 1, H: 1, HS: 2, theta: 1e4 },
      { B: 2, T: 3, H: 2, HS: 6, rotaryDim: 4, theta: 1e4 },
      { B: 2, T: 17, H: 4, HS: 64, theta: 5e5 },
      { B: 1, T: 256, H: 8, HS: 128, rotaryDim: 64, theta: 1e4 },
    ];
    for (const p of cases) {
      const n = p.B * p.T * p.H * p.HS;
      const x = rnd(n, 15), pos = randInt(p.T, 8192, 16);
      const tag = JSON.stringify(p);
      compare(`ropeForward ${tag}`, (be) => {
        const out = z(n), inplace = x.slice();
        be.ropeForward(out, x, pos, p);
        be.ropeForward(inplace, inplace, pos, p);
        assertExact(inplace, out, `ropeForward in place ${be.name}`);
        return [out];
      });
      compare(`ropeBackward ${tag}`, (be) => {
        const dx = z(n), inplace = x.slice();
        be.ropeBackward(dx, x, pos, p);
        be.ropeBackward(inplace, inplace, pos, p);
        assertExact(inplace, dx, `ropeBackward in place ${be.name}`);
        return [dx];
      });
    }
  });

  test("silu, gelu (erf and tanh) forward/backward", () => {
    for (const n of [1, 7, 1000, 1 << 21]) {
      const x = rnd(n, 17, 4), dout = rnd(n, 18);
      compare(`silu n${n}`, (be) => {
        const out = z(n), dx = z(n);
        be.siluForward(out, x);
        be.siluBackward(dx, dout, x);
        return [out, dx];
      });
      for (const approx of ["none", "tanh"] as GeluApprox[]) {
        compare(`gelu ${approx} n${n}`, (be) => {
          const out = z(n), dx = z(n);
          be.geluForward(out, x, approx);
          be.geluBackward(dx, dout, x, approx);
          return [out, dx];
        });
      }
    }
  });

  test("swiglu forward/backward", () => {
    for (const [N, F] of [
      [1, 1],
      [3, 7],
      [64, 1408],
    ] as const) {
      const gu = rnd(N * 2 * F, 19, 3), dout = rnd(N * F, 20);
      compare(`swiglu ${N}x${F}`, (be) => {
        const out = z(N * F), dgu = z(N * 2 * F);
        be.swigluForward(out, gu, N, F);
        be.swigluBackward(dgu, dout, gu, N, F);
        return [out, dgu];
      });
    }
  });

  test("add, axpy, scale (with allowed in-place forms)", () => {
    for (const n of [1, 7, 100_003]) {
      const a = rnd(n, 21), b = rnd(n, 22), y0 = rnd(n, 23);
      compare(`add/axpy/scale n${n}`, (be) => {
        const out = z(n), y = y0.slice(), s = z(n);
        be.add(out, a, b);
        const ina = a.slice();
        be.add(ina, ina, b);
        assertExact(ina, out, "add in place");
        be.axpy(y, a, -0.37);
        be.scale(s, a, 1.0 / 3);
        const ins = a.slice();
        be.scale(ins, ins, 1.0 / 3);
        assertExact(ins, s, "scale in place");
        return [out, y, s];
      });
    }
  });

  test("biasAdd forward/backward", () => {
    for (const [N, C] of rowShapes) {
      const x0 = rnd(N * C, 24), bias = rnd(C, 25), dout = rnd(N * C, 26), db0 = rnd(C, 27);
      compare(`biasAdd ${N}x${C}`, (be) => {
        const x = x0.slice(), db = db0.slice();
        be.biasAddForward(x, bias, N, C);
        be.biasAddBackward(db, dout, N, C);
        return [x, db];
      });
    }
  });

  test("softmax and logSoftmax forward/backward", () => {
    for (const [N, V] of [...rowShapes, [8, 32064] as [number, number]]) {
      const x = rnd(N * V, 28, 3), dout = rnd(N * V, 29);
      const sm = z(N * V), lsm = z(N * V);
      ref.softmaxForward(sm, x, N, V);
      ref.logSoftmaxForward(lsm, x, N, V);
      compare(`softmax ${N}x${V}`, (be) => {
        const out = z(N * V), inplace = x.slice(), dx = z(N * V);
        be.softmaxForward(out, x, N, V);
        be.softmaxForward(inplace, inplace, N, V);
        assertExact(inplace, out, "softmax in place");
        be.softmaxBackward(dx, dout, sm, N, V);
        return [out, dx];
      });
      compare(`logSoftmax ${N}x${V}`, (be) => {
        const out = z(N * V), dx = z(N * V);
        be.logSoftmaxForward(out, x, N, V);
        be.logSoftmaxBackward(dx, dout, lsm, N, V);
        return [out, dx];
      });
    }
  });

  test("crossEntropy forward/backward with ignored rows", () => {
    for (const [N, V] of [
      [1, 1],
      [3, 7],
      [17, 257],
      [64, 32064],
    ] as const) {
      const logits = rnd(N * V, 30, 3), dlosses = rnd(N, 31);
      const targets = randInt(N, V, 32);
      for (let n = 1; n < N; n += 3) targets[n] = -100;
      const lse = z(N);
      ref.crossEntropyForward(z(N), lse, logits, targets, N, V, -100);
      compare(`crossEntropy ${N}x${V}`, (be) => {
        const losses = z(N), l = z(N), dl = z(N * V), inplace = logits.slice();
        be.crossEntropyForward(losses, l, logits, targets, N, V, -100);
        be.crossEntropyBackward(dl, logits, lse, targets, dlosses, N, V, -100);
        be.crossEntropyBackward(inplace, inplace, lse, targets, dlosses, N, V, -100);
        assertExact(inplace, dl, "crossEntropyBackward in place");
        for (let n = 1; n < N; n += 3) {
          assert.equal(losses[n], 0);
          for (let j = 0; j < V; j++) assert.equal(dl[n * V + j], 0);
        }
        return [losses, l, dl];
      });
    }
  });

  test("extreme inputs: activation tails, masked (−Inf) and huge logits", () => {
    const x = Float32Array.of(-Infinity, -1e4, -100, -88.8, -88.7, -87.4, -87.3, -30, -1e-30, 0, 1e-30, 30, 88.5, 100, 1e4, Infinity, NaN);
    const n = x.length, dout = rnd(n, 39);
    compare("activations at extremes", (be) => {
      const outs: Float32Array[] = [];
      const o1 = z(n), o2 = z(n), o3 = z(n), d1 = z(n), d2 = z(n), d3 = z(n);
      be.siluForward(o1, x);
      be.siluBackward(d1, dout, x);
      be.geluForward(o2, x, "none");
      be.geluBackward(d2, dout, x, "none");
      be.geluForward(o3, x, "tanh");
      be.geluBackward(d3, dout, x, "tanh");
      outs.push(o1, o2, o3, d1, d2, d3);
      return outs;
    });
    const V = 6, N = 3;
    const logits = Float32Array.of(1, -Infinity, 2, -Infinity, 0.5, 3, 1e4, -1e4, 0, 1e4 - 1, 5, -3, -Infinity, -Infinity, 7, -Infinity, -Infinity, -Infinity);
    const targets = Int32Array.of(2, 3, 2);
    compare("softmax/CE with masked and huge logits", (be) => {
      const sm = z(N * V), lsm = z(N * V), losses = z(N), lse = z(N), dl = z(N * V);
      be.softmaxForward(sm, logits, N, V);
      be.logSoftmaxForward(lsm, logits, N, V);
      be.crossEntropyForward(losses, lse, logits, targets, N, V, -100);
      be.crossEntropyBackward(dl, logits, lse, targets, Float32Array.of(1, 1, 1), N, V, -100);
      assert.equal(sm[1], 0);
      assert.equal(sm[2 * V + 5], 0);
      assert.equal(sm[2 * V + 2], 1);
      return [sm, lsm, losses, lse, dl];
    });
  });

  test("sum, max, sumSquares", () => {
    for (const n of [0, 1, 7, 8193, (1 << 21) + 3]) {
      const x = rnd(n, 33);
      let l1 = 0;
      for (let i = 0; i < n; i++) l1 += Math.abs(x[i]!);
      const want = { sum: ref.sum(x), max: ref.max(x), sumSquares: ref.sumSquares(x) };
      const got = natives.map(({ be }) => ({ sum: be.sum(x), max: be.max(x), sumSquares: be.sumSquares(x) }));
      for (const g of got) {
        assert.ok(Math.abs(g.sum - want.sum) <= 1e-12 * l1, `sum n${n}: ${g.sum} vs ${want.sum}`);
        assert.ok(Math.abs(g.sumSquares - want.sumSquares) <= 1e-12 * want.sumSquares, `sumSquares n${n}`);
        assert.equal(g.max, want.max);
        assert.deepEqual(g, got[0], "thread-count independent");
      }
    }
    for (const be of [ref, nat2]) {
      assert.equal(be.max(z(0)), -Infinity);
      assert.equal(be.sum(z(0)), 0);
      const x = rnd(20000, 34);
      x[15000] = NaN;
      assert.ok(Number.isNaN(be.max(x)), `${be.name} max with NaN`);
      assert.equal(be.max(Float32Array.of(-Infinity, -3, -Infinity)), -3);
    }
  });

  test("adamw", () => {
    for (const n of [1, 7, 100_003]) {
      const p0 = rnd(n, 35), g = rnd(n, 36), m0 = rnd(n, 37, 0.1), v0 = rnd(n, 38, 0.1);
      for (let i = 0; i < n; i++) v0[i] = Math.abs(v0[i]!);
      compare(`adamw n${n}`, (be) => {
        const p = p0.slice(), m = m0.slice(), v = v0.slice();
        be.adamw(p, g, m, v, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 7 });
        return [p, m, v];
      });
    }
  });
});

// ---------------------------------------------------------------------------
describe("ops: finite-difference gradients (ref, f64)", () => {
  const r64 = (n: number, seed: number, std = 1) => randn(Float64Array, n, seed, std);
  const d = (n: number) => new Float64Array(n);
  function fd(name: string, wrt: Float64Array, loss: () => number, analytic: ArrayLike<number>): void {
    assertClose(analytic, numericGrad(wrt, loss), TOLFD, name);
  }

  test("embedding", () => {
    const V = 4, C = 3, ids = Int32Array.of(2, 0, 2, 3, 2);
    const N = ids.length, wte = r64(V * C, 40), dout = r64(N * C, 41);
    const dwte = d(V * C);
    ref.embeddingBackward(dwte, dout, ids, V, C);
    fd("dwte", wte, () => {
      const out = d(N * C);
      ref.embeddingForward(out, ids, wte, V, C);
      return dot(out, dout);
    }, dwte);
  });

  test("rmsnorm (dx, dw)", () => {
    const N = 3, C = 5, x = r64(N * C, 42), w = r64(C, 43), dout = r64(N * C, 44);
    const loss = () => {
      const out = d(N * C);
      ref.rmsnormForward(out, d(N), x, w, N, C, 1e-5);
      return dot(out, dout);
    };
    const rstd = d(N), dx = d(N * C), dw = d(C);
    ref.rmsnormForward(d(N * C), rstd, x, w, N, C, 1e-5);
    ref.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
    fd("rmsnorm dx", x, loss, dx);
    fd("rmsnorm dw", w, loss, dw);
  });

  test("layernorm (dx, dw, db)", () => {
    const N = 3, C = 6, x = r64(N * C, 45), w = r64(C, 46), b = r64(C, 47), dout = r64(N * C, 48);
    const loss = () => {
      const out = d(N * C);
      ref.layernormForward(out, d(N), d(N), x, w, b, N, C, 1e-5);
      return dot(out, dout);
    };
    const mean = d(N), rstd = d(N), dx = d(N * C), dw = d(C), db = d(C);
    ref.layernormForward(d(N * C), mean, rstd, x, w, b, N, C, 1e-5);
    ref.layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    fd("layernorm dx", x, loss, dx);
    fd("layernorm dw", w, loss, dw);
    fd("layernorm db", b, loss, db);
  });

  test("rope (partial rotary)", () => {
    const p: RopeParams = { B: 2, T: 3, H: 2, HS: 6, rotaryDim: 4, theta: 100 };
    const n = 2 * 3 * 2 * 6, x = r64(n, 49), dout = r64(n, 50), pos = Int32Array.of(0, 5, 17);
    const dx = d(n);
    ref.ropeBackward(dx, dout, pos, p);
    fd("rope dx", x, () => {
      const out = d(n);
      ref.ropeForward(out, x, pos, p);
      return dot(out, dout);
    }, dx);
  });

  test("silu, gelu (erf, tanh)", () => {
    const n = 41, x = d(n), dout = r64(n, 51);
    for (let i = 0; i < n; i++) x[i] = -8 + (16 * i) / (n - 1) + 0.013;
    const dx = d(n);
    ref.siluBackward(dx, dout, x);
    fd("silu dx", x, () => {
      const out = d(n);
      ref.siluForward(out, x);
      return dot(out, dout);
    }, dx);
    for (const approx of ["none", "tanh"] as GeluApprox[]) {
      const g = d(n);
      ref.geluBackward(g, dout, x, approx);
      fd(`gelu ${approx} dx`, x, () => {
        const out = d(n);
        ref.geluForward(out, x, approx);
        return dot(out, dout);
      }, g);
    }
  });

  test("swiglu", () => {
    const N = 3, F = 4, gu = r64(N * 2 * F, 52, 2), dout = r64(N * F, 53);
    const dgu = d(N * 2 * F);
    ref.swigluBackward(dgu, dout, gu, N, F);
    fd("swiglu dgu", gu, () => {
      const out = d(N * F);
      ref.swigluForward(out, gu, N, F);
      return dot(out, dout);
    }, dgu);
  });

  test("biasAdd", () => {
    const N = 4, C = 3, x = r64(N * C, 54), bias = r64(C, 55), dout = r64(N * C, 56);
    const db = d(C);
    ref.biasAddBackward(db, dout, N, C);
    fd("biasAdd dbias", bias, () => {
      const out = x.slice();
      ref.biasAddForward(out, bias, N, C);
      return dot(out, dout);
    }, db);
  });

  test("softmax, logSoftmax", () => {
    const N = 3, V = 5, x = r64(N * V, 57, 2), dout = r64(N * V, 58);
    for (const kind of ["softmax", "logSoftmax"] as const) {
      const fwd = kind === "softmax" ? ref.softmaxForward : ref.logSoftmaxForward;
      const bwd = kind === "softmax" ? ref.softmaxBackward : ref.logSoftmaxBackward;
      const out = d(N * V), dx = d(N * V);
      fwd(out, x, N, V);
      bwd(dx, dout, out, N, V);
      fd(`${kind} dx`, x, () => {
        const o = d(N * V);
        fwd(o, x, N, V);
        return dot(o, dout);
      }, dx);
    }
  });

  test("crossEntropy with an ignored row", () => {
    const N = 4, V = 5, logits = r64(N * V, 59, 2), dlosses = r64(N, 60);
    const targets = Int32Array.of(3, -1, 0, 4);
    const lse = d(N), dl = d(N * V);
    ref.crossEntropyForward(d(N), lse, logits, targets, N, V, -1);
    ref.crossEntropyBackward(dl, logits, lse, targets, dlosses, N, V, -1);
    fd("crossEntropy dlogits", logits, () => {
      const losses = d(N);
      ref.crossEntropyForward(losses, d(N), logits, targets, N, V, -1);
      return dot(losses, dlosses);
    }, dl);
    for (let j = 0; j < V; j++) assert.equal(dl[V + j], 0);
  });
});

// ---------------------------------------------------------------------------
describe("ops: closed forms", () => {
  test("erf / erfc / gelu against known values", () => {
    const cases: [number, number][] = [
      [0, 0],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [2, 0.9953222650189527],
      [-1.5, -0.9661051464753108],
      [3.5, 0.9999992569016276],
    ];
    for (const [x, v] of cases) assertClose([erf(x)], [v], { rtol: 1e-15, atol: 1e-16 }, `erf(${x})`);
    assertClose([erfc(5)], [1.5374597944280349e-12], { rtol: 1e-13, atol: 0 }, "erfc(5)");
    assertClose([erfc(-1)], [1.8427007929497148], { rtol: 1e-15, atol: 0 }, "erfc(-1)");
    // PyTorch 1.13 F.gelu in f64 at x = 1, −1, 3, −6 (tanh at −6 omitted: torch's 1 + tanh cancels there).
    const x64 = Float64Array.of(1, -1, 3, -6), g = new Float64Array(4);
    ref.geluForward(g, x64, "none");
    assertClose(g, [0.841344746068543, -0.15865525393145702, 2.99595030590511, -5.919525869479969e-9], { rtol: 1e-9, atol: 0 }, "gelu erf vs torch");
    ref.geluForward(g, x64, "tanh");
    assertClose(g.subarray(0, 3), [0.8411919906082768, -0.15880800939172324, 2.996362607918227], { rtol: 1e-14, atol: 0 }, "gelu tanh vs torch");
    for (const be of [ref, nat2]) {
      const out = new Float32Array(2);
      be.geluForward(out, Float32Array.of(1, -1), "none");
      assertClose(out, [0.8413447460685429, -0.15865525393145707], TOLN, `${be.name} gelu(±1)`);
    }
  });

  test("softmax of equal logits is 1/V; CE of uniform logits is log V", () => {
    for (const be of [ref, ...natives.map((n) => n.be)]) {
      const N = 3, V = 1000;
      const x = new Float32Array(N * V).fill(2.5), out = z(N * V);
      be.softmaxForward(out, x, N, V);
      assertClose(out, new Float32Array(N * V).fill(1 / V), TOLN, `${be.name} softmax`);
      const losses = z(N), lse = z(N);
      be.crossEntropyForward(losses, lse, x, Int32Array.of(0, 500, 999), N, V, -100);
      assertClose(losses, [Math.log(V), Math.log(V), Math.log(V)], TOLN, `${be.name} CE`);
      assertClose(lse, [2.5 + Math.log(V), 2.5 + Math.log(V), 2.5 + Math.log(V)], TOLN, `${be.name} lse`);
    }
  });

  test("rope: position 0 is the identity; pairs keep their norm; backward inverts forward", () => {
    const p: RopeParams = { B: 1, T: 3, H: 2, HS: 8, rotaryDim: 6, theta: 1e4 };
    const n = 48, x = rnd(n, 61), pos = Int32Array.of(0, 1, 1000);
    for (const be of [ref, nat2]) {
      const out = z(n), back = z(n);
      be.ropeForward(out, x, pos, p);
      assertExact(out.subarray(0, 16), x.subarray(0, 16), `${be.name} rope at pos 0`);
      for (let row = 0; row < 6; row++) {
        const o = row * 8;
        for (let i = 0; i < 3; i++) {
          const a = Math.hypot(x[o + i]!, x[o + i + 3]!), b = Math.hypot(out[o + i]!, out[o + i + 3]!);
          assertClose([b], [a], TOLN, `${be.name} pair norm`);
        }
        assertExact(out.subarray(o + 6, o + 8), x.subarray(o + 6, o + 8), "pass-through channels");
      }
      be.ropeBackward(back, out, pos, p);
      assertClose(back, x, TOLN, `${be.name} rope⁻¹∘rope`);
    }
    // Pair (i, i+half) at position 1 turns by exactly θ^(−2i/rd).
    const one = Float32Array.of(1, 1, 0, 0), r = z(4);
    ref.ropeForward(r, one, Int32Array.of(1), { B: 1, T: 1, H: 1, HS: 4, theta: 100 });
    assertClose(r, [Math.cos(1), Math.cos(0.1), Math.sin(1), Math.sin(0.1)], TOLN, "rope angles");
  });

  test("adamw: one step from zero moments; decoupled weight decay", () => {
    const n = 5, lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    const p0 = Float32Array.of(1, -2, 0.5, 3, -0.25), g = Float32Array.of(0.3, -0.1, 2, 0, -5);
    for (const be of [ref, nat2]) {
      const p = p0.slice(), m = z(n), v = z(n);
      be.adamw(p, g, m, v, { lr, beta1: b1, beta2: b2, eps, weightDecay: wd, step: 1 });
      // m̂ = g, v̂ = g²: p ← p − lr·(g/(|g|+eps) + wd·p).
      const want = Array.from(p0, (pi, i) => pi - lr * (g[i]! / (Math.abs(g[i]!) + eps) + wd * pi));
      assertClose(p, want, TOLN, `${be.name} adamw params`);
      assertClose(m, Array.from(g, (gi) => (1 - b1) * gi), TOLN, `${be.name} adamw m`);
      assertClose(v, Array.from(g, (gi) => (1 - b2) * gi * gi), TOLN, `${be.name} adamw v`);
      // Zero gradient: only the decay acts, p·(1 − lr·wd), independent of moments.
      const q = p0.slice();
      be.adamw(q, z(n), z(n), z(n), { lr, beta1: b1, beta2: b2, eps, weightDecay: wd, step: 3 });
      assertClose(q, Array.from(p0, (pi) => pi * (1 - lr * wd)), TOLN, `${be.name} adamw decay`);
    }
  });

  test("layernorm with scalar w, b: rows have mean b and variance w²; rmsnorm rows have rms |w|", () => {
    const N = 4, C = 4096, x = rnd(N * C, 62, 3), w = new Float32Array(C).fill(1.7), b = new Float32Array(C).fill(-0.4);
    for (const be of [ref, nat2]) {
      const out = z(N * C);
      be.layernormForward(out, z(N), z(N), x, w, b, N, C, 1e-6);
      for (let n = 0; n < N; n++) {
        const row = out.subarray(n * C, (n + 1) * C);
        const mu = be.sum(row) / C;
        let v = 0;
        for (const t of row) v += (t - mu) ** 2;
        assertClose([mu, v / C], [-0.4, 1.7 * 1.7], { rtol: 1e-4, atol: 1e-5 }, `${be.name} layernorm row ${n}`);
      }
      be.rmsnormForward(out, z(N), x, w, N, C, 1e-6);
      for (let n = 0; n < N; n++) {
        const rms = Math.sqrt(be.sumSquares(out.subarray(n * C, (n + 1) * C)) / C);
        assertClose([rms], [1.7], { rtol: 1e-4, atol: 0 }, `${be.name} rmsnorm row ${n}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------
describe("ops: arrays over a SharedArrayBuffer", () => {
  // worker_threads ranks hold tensors in SharedArrayBuffers; the native engine read their data
  // pointer as null before (a segmentation fault in be.add), so every kernel route must take them
  const shared = (a: Float32Array): Float32Array => {
    const s = new Float32Array(new SharedArrayBuffer(a.byteLength + 8), 8, a.length); // with a byte offset
    s.set(a);
    return s;
  };
  test("add, softmax and gemm give the same bits as on ordinary arrays", () => {
    const M = 7, K = 33, N = 19;
    const a = rnd(M * K, 1), b = rnd(K * N, 2), x = rnd(M * K, 3);
    for (const { be } of natives) {
      const want = [z(M * K), z(M * K), z(M * N)];
      be.add(want[0]!, a, x);
      be.softmaxForward(want[1]!, a, M, K);
      be.gemm(a, b, want[2]!, { M, K, N });
      const got = [shared(z(M * K)), shared(z(M * K)), shared(z(M * N))];
      be.add(got[0]!, shared(a), shared(x));
      be.softmaxForward(got[1]!, shared(a), M, K);
      be.gemm(shared(a), shared(b), got[2]!, { M, K, N });
      got.forEach((g, i) => assertExact(g, want[i]!, `shared ${i}`));
      // and the values are the ref's (the ordinary arrays are checked against ref above)
      const r = z(M * K);
      ref.add(r, a, x);
      assertExact(got[0]!, r, "add vs ref");
    }
  });
});

describe("ops: bad input", () => {
  const all = [ref, nat2];
  test("wrong dtype, mixed dtypes, Float64Array to native", () => {
    for (const be of all) {
      assertKernelError(() => be.siluForward(z(3), new Int32Array(3) as unknown as FArr), /x must be a Float32Array or Float64Array/);
      assertKernelError(() => be.sum([1, 2] as unknown as FArr), /x must be/);
      assertKernelError(() => be.embeddingForward(z(2), new Float32Array(1) as unknown as Int32Array, z(2), 1, 2), /ids must be an Int32Array/);
      assertKernelError(() => be.geluForward(z(3), z(3), "exact" as GeluApprox), /approx/);
    }
    assertKernelError(() => ref.add(z(3), new Float64Array(3), z(3)), /one call uses one float dtype/);
    assertKernelError(() => nat2.sum(new Float64Array(3)), /Float64Array/);
    assertKernelError(() => nat2.softmaxForward(new Float64Array(6), new Float64Array(6), 2, 3), /native backend computes in f32/);
  });

  test("wrong lengths and dims", () => {
    for (const be of all) {
      assertKernelError(() => be.rmsnormForward(z(6), z(2), z(7), z(3), 2, 3, 1e-5), /x has 7 elements, expected 6/);
      assertKernelError(() => be.layernormBackward(z(6), z(3), z(2), z(6), z(6), z(3), z(2), z(2), 2, 3), /db has 2 elements/);
      assertKernelError(() => be.swigluForward(z(6), z(6), 2, 3), /gu has 6 elements, expected 12/);
      assertKernelError(() => be.add(z(3), z(3), z(4)), /b has 4 elements/);
      assertKernelError(() => be.adamw(z(3), z(3), z(3), z(2), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1 }), /v has 2/);
      assertKernelError(() => be.adamw(z(3), z(3), z(3), z(3), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 0 }), /step/);
      assertKernelError(() => be.softmaxForward(z(0), z(0), 2, 0), /V must be positive/);
      assertKernelError(() => be.biasAddForward(z(6), z(3), 2.5, 3), /N must be a non-negative integer/);
      assertKernelError(() => be.rmsnormForward(z(6), z(2), z(6), z(3), 2, 3, -1), /eps/);
      const x = z(2 * 6);
      assertKernelError(() => be.ropeForward(z(12), x, Int32Array.of(0, 1), { B: 1, T: 2, H: 1, HS: 6, rotaryDim: 3, theta: 1e4 }), /rotaryDim must be even/);
      assertKernelError(() => be.ropeForward(z(12), x, Int32Array.of(0, 1), { B: 1, T: 2, H: 1, HS: 6, rotaryDim: 8, theta: 1e4 }), /exceeds HS/);
      assertKernelError(() => be.ropeForward(z(10), z(10), Int32Array.of(0, 1), { B: 1, T: 2, H: 1, HS: 5, theta: 1e4 }), /defaulted to HS/);
      assertKernelError(() => be.ropeForward(z(12), x, Int32Array.of(0), { B: 1, T: 2, H: 1, HS: 6, theta: 1e4 }), /pos has 1 elements/);
    }
  });

  test("out-of-range ids, targets and positions", () => {
    for (const be of all) {
      assertKernelError(() => be.embeddingForward(z(4), Int32Array.of(0, 2), z(4), 2, 2), /ids\[1\] = 2 is out of range/);
      assertKernelError(() => be.embeddingBackward(z(4), z(4), Int32Array.of(-1, 0), 2, 2), /ids\[0\] = -1/);
      assertKernelError(() => be.crossEntropyForward(z(2), z(2), z(6), Int32Array.of(0, 3), 2, 3, -100), /targets\[1\] = 3/);
      assertKernelError(() => be.crossEntropyBackward(z(6), z(6), z(2), Int32Array.of(-1, 0), z(2), 2, 3, -100), /targets\[0\] = -1/);
      be.crossEntropyForward(z(2), z(2), z(6), Int32Array.of(-100, 2), 2, 3, -100); // ignoreIndex is allowed
      assertKernelError(() => be.ropeForward(z(4), z(4), Int32Array.of(-3), { B: 1, T: 1, H: 1, HS: 4, theta: 1e4 }), /pos\[0\] = -3/);
    }
  });

  test("forbidden aliasing (allowed exact in-place forms pass)", () => {
    for (const be of all) {
      const buf = z(16);
      assertKernelError(() => be.siluForward(buf, buf), /overlap/);
      assertKernelError(() => be.logSoftmaxForward(buf, buf, 4, 4), /overlap/);
      assertKernelError(() => be.axpy(buf, buf, 2), /overlap/);
      assertKernelError(() => be.softmaxForward(buf.subarray(0, 8), buf.subarray(4, 12), 2, 4), /overlap/);
      assertKernelError(() => be.ropeForward(buf.subarray(0, 8), buf.subarray(2, 10), Int32Array.of(0, 1), { B: 1, T: 2, H: 1, HS: 4, theta: 1e4 }), /overlap/);
      assertKernelError(() => be.rmsnormForward(buf.subarray(0, 8), buf.subarray(8, 10), buf.subarray(0, 8), z(4), 2, 4, 1e-5), /overlap/);
      assertKernelError(() => be.rmsnormBackward(z(8), buf.subarray(0, 4), buf.subarray(0, 8), z(8), z(4), z(2), 2, 4), /overlap/);
      assertKernelError(() => be.adamw(buf.subarray(0, 4), z(4), buf.subarray(4, 8), buf.subarray(4, 8), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1 }), /overlap/);
      assertKernelError(() => be.crossEntropyForward(buf.subarray(0, 2), buf.subarray(1, 3), z(6), Int32Array.of(0, 1), 2, 3, -100), /overlap/);
      assertKernelError(() => be.crossEntropyBackward(buf.subarray(0, 6), buf.subarray(1, 7), z(2), Int32Array.of(0, 1), z(2), 2, 3, -100), /overlap/);
      assertKernelError(() => be.biasAddBackward(buf.subarray(0, 4), buf.subarray(0, 8), 2, 4), /overlap/);
      // Allowed exact aliases.
      be.softmaxForward(buf, buf, 4, 4);
      be.scale(buf, buf, 2);
      be.add(buf, buf, buf);
      be.ropeBackward(buf, buf, Int32Array.of(0, 1), { B: 1, T: 2, H: 2, HS: 4, theta: 1e4 });
      be.crossEntropyBackward(buf.subarray(0, 6), buf.subarray(0, 6), z(2), Int32Array.of(0, 1), z(2), 2, 3, -100);
    }
  });
});
