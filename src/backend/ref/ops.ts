// Reference ops kernels: embedding, RMSNorm, LayerNorm, RoPE, SiLU, GELU (erf and
// tanh), fused SwiGLU, elementwise, bias, softmax / log-softmax, fused cross-entropy,
// reductions and AdamW — plain loops, generic over Float32Array / Float64Array, every
// accumulation in JS numbers (f64).
// What it is: the oracle the native backend and the finite-difference checks use.
// What it is not: fast, or a place for validation (see ../checks/ops.ts).
import type { AdamWParams, FArr, GeluApprox, OpsKernels, RopeParams } from "../spec.js";

// ---------------------------------------------------------------------------
// erf / erfc in double precision (Math has neither).
//
// |x| < 3: erf(x) = 2/√π · e^(−x²) · Σ_{n≥0} 2ⁿ x^(2n+1) / (1·3·…·(2n+1))
//   (all terms positive — no cancellation; converges for every x).
// erf for |x| ≥ 3 and erfc for x ≥ 2: erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
//   (Laplace continued fraction, evaluated with modified Lentz).

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const ONE_OVER_SQRT_PI = 0.5641895835477563;

/** erf(x) for 0 ≤ x < 3 by the positive-term series. */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x, sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
}

/** erfc(x) for x ≥ 2 by continued fraction (≤ 500 terms reach 1e-16 there). */
function erfcLarge(x: number): number {
  // f = x + a1/(x + a2/(x + …)), a_k = k/2.
  const tiny = 1e-300;
  let f = x, C = x, D = 0;
  for (let k = 1; k < 500; k++) {
    const a = k / 2;
    D = x + a * D;
    if (D === 0) D = tiny;
    C = x + a / C;
    if (C === 0) C = tiny;
    D = 1 / D;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return (Math.exp(-x * x) * ONE_OVER_SQRT_PI) / f;
}

/** Error function, ~1e-15 relative accuracy. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a < 3) return x < 0 ? -erfSeries(a) : erfSeries(a);
  const r = a > 27 ? 1 : 1 - erfcLarge(a);
  return x < 0 ? -r : r;
}

/** Complementary error function, accurate in the tail (no 1 − erf cancellation for large x). */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x >= 2) return x > 27 ? 0 : erfcLarge(x);
  return 1 - erf(x);
}

// ---------------------------------------------------------------------------
// Scalar activation functions (exported for tests and other refs).

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 0.3989422804014327;
const GELU_K = 0.7978845608028654; // √(2/π)
const GELU_C = 0.044715;

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}
export function silu(x: number): number {
  return x * sigmoid(x);
}
export function siluGrad(x: number): number {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
}
/** Φ(x), the standard normal CDF (erfc form keeps the left tail accurate). */
function normCdf(x: number): number {
  return x < 0 ? 0.5 * erfc(-x * SQRT1_2) : 0.5 * (1 + erf(x * SQRT1_2));
}
export function gelu(x: number, approx: GeluApprox): number {
  // 0.5·(1 + tanh u) = σ(2u): the same function without cancellation in the left tail.
  if (approx === "tanh") return x * sigmoid(2 * GELU_K * (x + GELU_C * x * x * x));
  return x * normCdf(x);
}
export function geluGrad(x: number, approx: GeluApprox): number {
  if (approx === "tanh") {
    // 1 − tanh²u = 4σ(2u)(1 − σ(2u)).
    const s = sigmoid(2 * GELU_K * (x + GELU_C * x * x * x));
    return s + 2 * x * s * (1 - s) * GELU_K * (1 + 3 * GELU_C * x * x);
  }
  return normCdf(x) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

// ---------------------------------------------------------------------------

function ropeApply(out: FArr, x: FArr, pos: Int32Array, p: RopeParams, sign: 1 | -1): void {
  const { B, T, H, HS } = p;
  const rd = p.rotaryDim ?? HS, half = rd / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = p.invFreq ? p.invFreq[i]! : Math.pow(p.theta, (-2 * i) / rd);
  const scale = p.scale ?? 1;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const ps = pos[t]!;
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * HS;
        for (let i = 0; i < half; i++) {
          const ang = ps * invFreq[i]!;
          const c = scale * Math.cos(ang), s = sign * scale * Math.sin(ang);
          const x1 = x[o + i]!, x2 = x[o + i + half]!;
          out[o + i] = x1 * c - x2 * s;
          out[o + i + half] = x2 * c + x1 * s;
        }
        if (out !== x) for (let i = rd; i < HS; i++) out[o + i] = x[o + i]!;
      }
    }
  }
}

function rowMax(x: FArr, o: number, V: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) if (x[o + j]! > m) m = x[o + j]!;
  return m;
}

/** log Σ exp over one row (max-shifted). */
function rowLse(x: FArr, o: number, V: number): number {
  const m = rowMax(x, o, V);
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(x[o + j]! - m);
  return m + Math.log(s);
}

export const refOps: OpsKernels = {
  embeddingForward(out, ids, wte, _V, C) {
    for (let n = 0; n < ids.length; n++) {
      const src = ids[n]! * C, dst = n * C;
      for (let c = 0; c < C; c++) out[dst + c] = wte[src + c]!;
    }
  },
  embeddingBackward(dwte, dout, ids, _V, C) {
    for (let n = 0; n < ids.length; n++) {
      const dst = ids[n]! * C, src = n * C;
      for (let c = 0; c < C; c++) dwte[dst + c] += dout[src + c]!;
    }
  },

  rmsnormForward(out, rstd, x, w, N, C, eps) {
    for (let n = 0; n < N; n++) {
      const o = n * C;
      let ss = 0;
      for (let c = 0; c < C; c++) ss += x[o + c]! * x[o + c]!;
      const r = 1 / Math.sqrt(ss / C + eps);
      for (let c = 0; c < C; c++) out[o + c] = x[o + c]! * r * w[c]!;
      rstd[n] = r;
    }
  },
  rmsnormBackward(dx, dw, dout, x, w, rstd, N, C) {
    const acc = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      const o = n * C, r = rstd[n]!;
      let dot = 0;
      for (let c = 0; c < C; c++) {
        const norm = x[o + c]! * r;
        dot += dout[o + c]! * w[c]! * norm;
        acc[c] += dout[o + c]! * norm;
      }
      dot /= C;
      for (let c = 0; c < C; c++) dx[o + c] = r * (dout[o + c]! * w[c]! - x[o + c]! * r * dot);
    }
    for (let c = 0; c < C; c++) dw[c] += acc[c]!;
  },
  layernormForward(out, mean, rstd, x, w, b, N, C, eps) {
    for (let n = 0; n < N; n++) {
      const o = n * C;
      let s = 0;
      for (let c = 0; c < C; c++) s += x[o + c]!;
      const mu = s / C;
      let v = 0;
      for (let c = 0; c < C; c++) v += (x[o + c]! - mu) * (x[o + c]! - mu);
      const r = 1 / Math.sqrt(v / C + eps);
      for (let c = 0; c < C; c++) out[o + c] = (x[o + c]! - mu) * r * w[c]! + b[c]!;
      mean[n] = mu;
      rstd[n] = r;
    }
  },
  layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C) {
    const accW = new Float64Array(C), accB = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      const o = n * C, mu = mean[n]!, r = rstd[n]!;
      let dmean = 0, dnormMean = 0;
      for (let c = 0; c < C; c++) {
        const norm = (x[o + c]! - mu) * r;
        const dnorm = dout[o + c]! * w[c]!;
        dmean += dnorm;
        dnormMean += dnorm * norm;
        accW[c] += dout[o + c]! * norm;
        accB[c] += dout[o + c]!;
      }
      dmean /= C;
      dnormMean /= C;
      for (let c = 0; c < C; c++) {
        const norm = (x[o + c]! - mu) * r;
        dx[o + c] = (dout[o + c]! * w[c]! - dmean - norm * dnormMean) * r;
      }
    }
    for (let c = 0; c < C; c++) {
      dw[c] += accW[c]!;
      db[c] += accB[c]!;
    }
  },

  ropeForward(out, x, pos, p) {
    ropeApply(out, x, pos, p, 1);
  },
  ropeBackward(dx, dout, pos, p) {
    ropeApply(dx, dout, pos, p, -1);
  },

  siluForward(out, x) {
    for (let i = 0; i < x.length; i++) out[i] = silu(x[i]!);
  },
  siluBackward(dx, dout, x) {
    for (let i = 0; i < x.length; i++) dx[i] = dout[i]! * siluGrad(x[i]!);
  },
  geluForward(out, x, approx) {
    for (let i = 0; i < x.length; i++) out[i] = gelu(x[i]!, approx);
  },
  geluBackward(dx, dout, x, approx) {
    for (let i = 0; i < x.length; i++) dx[i] = dout[i]! * geluGrad(x[i]!, approx);
  },
  swigluForward(out, gu, N, F) {
    for (let n = 0; n < N; n++) {
      const g = n * 2 * F, o = n * F;
      for (let f = 0; f < F; f++) out[o + f] = silu(gu[g + f]!) * gu[g + F + f]!;
    }
  },
  swigluBackward(dgu, dout, gu, N, F) {
    for (let n = 0; n < N; n++) {
      const g = n * 2 * F, o = n * F;
      for (let f = 0; f < F; f++) {
        const gate = gu[g + f]!, up = gu[g + F + f]!, d = dout[o + f]!;
        dgu[g + f] = d * up * siluGrad(gate);
        dgu[g + F + f] = d * silu(gate);
      }
    }
  },

  add(out, a, b) {
    for (let i = 0; i < out.length; i++) out[i] = a[i]! + b[i]!;
  },
  axpy(y, x, alpha) {
    for (let i = 0; i < y.length; i++) y[i] += alpha * x[i]!;
  },
  scale(out, x, alpha) {
    for (let i = 0; i < out.length; i++) out[i] = x[i]! * alpha;
  },
  biasAddForward(x, bias, N, C) {
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) x[n * C + c] += bias[c]!;
  },
  biasAddBackward(dbias, dout, N, C) {
    const acc = new Float64Array(C);
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) acc[c] += dout[n * C + c]!;
    for (let c = 0; c < C; c++) dbias[c] += acc[c]!;
  },

  softmaxForward(out, x, N, V) {
    for (let n = 0; n < N; n++) {
      const o = n * V, lse = rowLse(x, o, V);
      for (let j = 0; j < V; j++) out[o + j] = Math.exp(x[o + j]! - lse);
    }
  },
  softmaxBackward(dx, dout, out, N, V) {
    for (let n = 0; n < N; n++) {
      const o = n * V;
      let s = 0;
      for (let j = 0; j < V; j++) s += dout[o + j]! * out[o + j]!;
      for (let j = 0; j < V; j++) dx[o + j] = out[o + j]! * (dout[o + j]! - s);
    }
  },
  logSoftmaxForward(out, x, N, V) {
    for (let n = 0; n < N; n++) {
      const o = n * V, lse = rowLse(x, o, V);
      for (let j = 0; j < V; j++) out[o + j] = x[o + j]! - lse;
    }
  },
  logSoftmaxBackward(dx, dout, out, N, V) {
    for (let n = 0; n < N; n++) {
      const o = n * V;
      let s = 0;
      for (let j = 0; j < V; j++) s += dout[o + j]!;
      for (let j = 0; j < V; j++) dx[o + j] = dout[o + j]! - Math.exp(out[o + j]!) * s;
    }
  },

  crossEntropyForward(losses, lse, logits, targets, N, V, ignoreIndex) {
    for (let n = 0; n < N; n++) {
      const o = n * V, l = rowLse(logits, o, V), t = targets[n]!;
      lse[n] = l;
      losses[n] = t === ignoreIndex ? 0 : l - logits[o + t]!;
    }
  },
  crossEntropyBackward(dlogits, logits, lse, targets, dlosses, N, V, ignoreIndex) {
    for (let n = 0; n < N; n++) {
      const o = n * V, t = targets[n]!;
      if (t === ignoreIndex) {
        dlogits.fill(0, o, o + V);
        continue;
      }
      const l = lse[n]!, d = dlosses[n]!;
      for (let j = 0; j < V; j++) dlogits[o + j] = (Math.exp(logits[o + j]! - l) - (j === t ? 1 : 0)) * d;
    }
  },

  sum(x) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]!;
    return s;
  },
  max(x) {
    let m = -Infinity;
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      if (Number.isNaN(v)) return NaN;
      if (v > m) m = v;
    }
    return m;
  },
  sumSquares(x) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
    return s;
  },

  adamw(param, grad, m, v, p: AdamWParams) {
    const { lr, beta1, beta2, eps, weightDecay, step } = p;
    const bc1 = 1 - Math.pow(beta1, step), bc2 = 1 - Math.pow(beta2, step);
    for (let i = 0; i < param.length; i++) {
      const g = grad[i]!;
      const mi = beta1 * m[i]! + (1 - beta1) * g;
      const vi = beta2 * v[i]! + (1 - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      const mhat = mi / bc1, vhat = vi / bc2;
      param[i] = param[i]! - lr * (mhat / (Math.sqrt(vhat) + eps) + weightDecay * param[i]!);
    }
  },
};
