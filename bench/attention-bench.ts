// Attention benchmark: native flash-style forward/backward at T = 1024 and 4096 (B=1,
// 8 query heads of 64, GQA 8/2, causal) per thread count, side by side with PyTorch 1.13
// (plain matmul → softmax → matmul, repeat_interleave for GQA, backward by autograd) run
// as a child process in the same run, plus the native scratch memory at both lengths.
// Not: a correctness test (it validates once against ref and stops on a mismatch; the
// real tests are test/attention.test.ts).
//
// FLOP formula (causal, counting only visible (query, key) pairs, ≈ T²/2 of them):
//   forward  = 2 matmuls (QKᵀ, PV) · 2·HS flops per pair = 2·2·B·NH·T²·HS/2
//   backward = 2.5 × forward (5 matmuls: recomputed QKᵀ, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q, dS·K)
// The same numbers are used for PyTorch, which computes the full T² (masked) square, so
// its GFLOP/s here is "useful" GFLOP/s.
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import type { AttentionParams, Backend } from "../src/backend/spec.js";
import { createBackend } from "../src/backend/index.js";
import { loadAddon, type EngineHandle } from "../src/backend/native/addon.js";
import { timeMs, type ResultLine } from "./common.js";

type Row = ResultLine;

const B = 1, NH = 8, KVH = 2, HS = 64;
const LENGTHS = [1024, 4096];
const PEER = "torch-1.13";

function fwdFlops(T: number): number {
  return (2 * 2 * B * NH * T * T * HS) / 2;
}

/** Deterministic pseudo-normal-ish fill, cheap (Irwin–Hall of 4 uniforms, scaled). */
function fill(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  for (let i = 0; i < n; i++) a[i] = (u() + u() + u() + u() - 2) * 1.7;
  return a;
}

function time(reps: number, fn: () => void): number {
  return timeMs(fn, reps);
}

function validate(native: Backend): void {
  const ref = createBackend({ name: "ref" });
  const p: AttentionParams = { B, T: 130, NH, KVH, HS };
  const nq = B * 130 * NH * HS, nk = B * 130 * KVH * HS;
  const q = fill(nq, 1), k = fill(nk, 2), v = fill(nk, 3), dout = fill(nq, 4);
  const o1 = new Float32Array(nq), l1 = new Float32Array(B * NH * 130), o2 = new Float32Array(nq), l2 = new Float32Array(B * NH * 130);
  ref.attentionForward(o1, l1, q, k, v, p);
  native.attentionForward(o2, l2, q, k, v, p);
  const g1 = [new Float32Array(nq), new Float32Array(nk), new Float32Array(nk)] as const;
  const g2 = [new Float32Array(nq), new Float32Array(nk), new Float32Array(nk)] as const;
  ref.attentionBackward(g1[0], g1[1], g1[2], dout, q, k, v, o1, l1, p);
  native.attentionBackward(g2[0], g2[1], g2[2], dout, q, k, v, o1, l1, p);
  const pairs: [string, Float32Array, Float32Array][] = [["out", o2, o1], ["lse", l2, l1], ["dq", g2[0], g1[0]], ["dk", g2[1], g1[1]], ["dv", g2[2], g1[2]]];
  for (const [name, a, b] of pairs) {
    for (let i = 0; i < a.length; i++) {
      if (!(Math.abs(a[i]! - b[i]!) <= 2e-4 + 2e-3 * Math.abs(b[i]!))) throw new Error(`attention bench: native ${name}[${i}] = ${a[i]} but ref = ${b[i]}`);
    }
  }
}

// The PyTorch peer. Forward is timed with autograd recording (as in training); backward
// times only .backward(). Peak-RSS growth of the forward is read from ru_maxrss.
const TORCH_SCRIPT = String.raw`
import json, sys, time, resource, torch
cfg = json.loads(sys.argv[1])
B, NH, KVH, HS = cfg["B"], cfg["NH"], cfg["KVH"], cfg["HS"]
def attn(q, k, v, mask, scale):
    kk = k.repeat_interleave(NH // KVH, dim=1)
    vv = v.repeat_interleave(NH // KVH, dim=1)
    s = (q @ kk.transpose(-1, -2)) * scale
    s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ vv
def med(xs):
    return sorted(xs)[len(xs) // 2]
res = {}
torch.manual_seed(0)
for T in cfg["lengths"]:
    q0 = torch.randn(B, NH, T, HS); k0 = torch.randn(B, KVH, T, HS); v0 = torch.randn(B, KVH, T, HS); dout = torch.randn(B, NH, T, HS)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    scale = HS ** -0.5
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q = q0.clone().requires_grad_(); k = k0.clone().requires_grad_(); v = v0.clone().requires_grad_()
    o = attn(q, k, v, mask, scale)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del o
    res[str(T)] = {"fwd_peak_rss_delta_bytes": (peak - before) * 1024}
    for t in cfg["threads"]:
        torch.set_num_threads(t)
        reps = cfg["reps"][str(T)]
        fw, bw = [], []
        for r in range(reps + 1):
            q = q0.clone().requires_grad_(); k = k0.clone().requires_grad_(); v = v0.clone().requires_grad_()
            t0 = time.perf_counter(); o = attn(q, k, v, mask, scale); t1 = time.perf_counter()
            o.backward(dout); t2 = time.perf_counter()
            if r > 0:
                fw.append((t1 - t0) * 1e3); bw.append((t2 - t1) * 1e3)
            del o
        res[str(T)][str(t)] = {"fwd_ms": med(fw), "bwd_ms": med(bw)}
print(json.dumps(res))
`;

type TorchResult = Record<string, Record<string, { fwd_ms: number; bwd_ms: number }> & { fwd_peak_rss_delta_bytes: number }>;

/**
 * One child per thread count, so OpenBLAS (Debian's pthread build, which torch calls for
 * matmul and which reads its thread count at load) and torch's OpenMP pool both get t:
 * OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = t, OMP_WAIT_POLICY=PASSIVE, torch.set_num_threads(t).
 */
function runTorch(threads: number[], reps: Record<string, number>): TorchResult | null {
  const merged: TorchResult = {};
  for (const t of threads) {
    const cfg = { B, NH, KVH, HS, lengths: LENGTHS, threads: [t], reps };
    const r = spawnSync("/usr/bin/python3", ["-c", TORCH_SCRIPT, JSON.stringify(cfg)], {
      env: { ...process.env, OMP_WAIT_POLICY: "PASSIVE", OMP_NUM_THREADS: String(t), OPENBLAS_NUM_THREADS: String(t) },
      encoding: "utf8",
      maxBuffer: 1 << 20,
    });
    if (r.status !== 0) {
      process.stderr.write(`attention bench: PyTorch peer failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr?.slice(-500) ?? ""}\n`);
      return null;
    }
    const res = JSON.parse(r.stdout.trim().split("\n").pop()!) as TorchResult;
    for (const [T, v] of Object.entries(res)) merged[T] = { ...v, ...merged[T] } as TorchResult[string];
  }
  return merged;
}

/** Native scratch bytes (all threads) reported by the addon for one forward and one backward. */
function scratchBytes(threads: number, T: number): { fwd: number; bwd: number } {
  const a = loadAddon();
  const e = a.createEngine!(threads, "builtin") as EngineHandle;
  const nq = B * T * NH * HS, nk = B * T * KVH * HS;
  const q = fill(nq, 1), k = fill(nk, 2), v = fill(nk, 3);
  const out = new Float32Array(nq), lse = new Float32Array(B * NH * T);
  const dims = [B, T, T, NH, KVH, HS, 0, 1 / Math.sqrt(HS)];
  const fwd = a.attentionForward!(e, out, lse, q, k, v, ...dims) as number;
  const bwd = a.attentionBackward!(e, new Float32Array(nq), new Float32Array(nk), new Float32Array(nk), q, q, k, v, out, lse, ...dims) as number;
  return { fwd, bwd };
}

export async function runAttentionBench(opts: { threads: number[]; json: boolean }): Promise<void> {
  const reps: Record<string, number> = { "1024": 5, "4096": 3 };
  const rows: Row[] = [];
  const ours = new Map<string, { fwd: number; bwd: number }>();
  for (const t of opts.threads) {
    const be = createBackend({ name: "native", threads: t });
    validate(be);
    for (const T of LENGTHS) {
      const p: AttentionParams = { B, T, NH, KVH, HS };
      const nq = B * T * NH * HS, nk = B * T * KVH * HS;
      const q = fill(nq, 1), k = fill(nk, 2), v = fill(nk, 3), dout = fill(nq, 4);
      const out = new Float32Array(nq), lse = new Float32Array(B * NH * T);
      const dq = new Float32Array(nq), dk = new Float32Array(nk), dv = new Float32Array(nk);
      const fwd = time(reps[String(T)]!, () => be.attentionForward(out, lse, q, k, v, p));
      const bwd = time(reps[String(T)]!, () => be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, p));
      ours.set(`${t}/${T}`, { fwd, bwd });
    }
  }
  const torch = runTorch(opts.threads, reps);
  for (const T of LENGTHS) {
    for (const t of opts.threads) {
      const o = ours.get(`${t}/${T}`)!;
      const pt = torch?.[String(T)]?.[String(t)];
      for (const [dir, ms, pms, flop] of [
        ["fwd", o.fwd, pt?.fwd_ms, fwdFlops(T)],
        ["bwd", o.bwd, pt?.bwd_ms, 2.5 * fwdFlops(T)],
      ] as const) {
        const c = `${dir} T=${T} B=${B} NH=${NH} KVH=${KVH} HS=${HS} causal`;
        const peer = pms === undefined ? null : PEER;
        rows.push({ bench: "attention", case: c, threads: t, value: ms, unit: "ms", peer, peer_value: pms ?? null, ratio: pms === undefined ? null : pms / ms });
        const gf = flop / ms / 1e6, pgf = pms === undefined ? null : flop / pms / 1e6;
        rows.push({ bench: "attention", case: c, threads: t, value: gf, unit: "GFLOP/s", peer, peer_value: pgf, ratio: pgf === null ? null : gf / pgf });
      }
    }
  }
  // Memory: native scratch (all threads, counted by the kernel) vs PyTorch's forward peak-RSS growth.
  const tmax = Math.max(...opts.threads);
  const mem: Record<number, { fwd: number; bwd: number }> = {};
  for (const T of LENGTHS) {
    mem[T] = scratchBytes(tmax, T);
    const pb = torch?.[String(T)]?.fwd_peak_rss_delta_bytes;
    rows.push({
      bench: "attention",
      case: `fwd scratch bytes T=${T}`,
      threads: tmax,
      value: mem[T]!.fwd,
      unit: "bytes",
      peer: pb === undefined ? null : `${PEER} fwd peak-RSS growth`,
      peer_value: pb ?? null,
      ratio: pb === undefined ? null : pb / mem[T]!.fwd,
    });
    rows.push({ bench: "attention", case: `bwd scratch bytes T=${T}`, threads: tmax, value: mem[T]!.bwd, unit: "bytes", peer: null, peer_value: null, ratio: null });
  }

  if (opts.json) {
    for (const r of rows) console.log(JSON.stringify(r));
    return;
  }
  console.log(`attention: native flash-style vs ${PEER} (matmul-softmax-matmul, autograd; OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=threads, OMP_WAIT_POLICY=PASSIVE)`);
  console.log("ratio = our speed / peer speed (>1: we are faster); memory ratio = peer bytes / our bytes");
  console.log(["case".padEnd(44), "thr", "ours".padStart(10), "peer".padStart(10), "unit".padEnd(8), "ratio".padStart(7)].join("  "));
  const f = (x: number | null, unit: string) => (x === null ? "—" : unit === "bytes" ? `${(x / 1024).toFixed(0)}K` : x.toFixed(1));
  for (const r of rows) {
    console.log([r.case.padEnd(44), String(r.threads).padStart(3), f(r.value, r.unit).padStart(10), f(r.peer_value, r.unit).padStart(10), r.unit.padEnd(8), (r.ratio === null ? "—" : r.ratio.toFixed(2)).padStart(7)].join("  "));
  }
  const [a, b] = LENGTHS as [number, number];
  console.log(`native scratch grows ${(mem[b]!.fwd / mem[a]!.fwd).toFixed(2)}× (fwd) and ${(mem[b]!.bwd / mem[a]!.bwd).toFixed(2)}× (bwd) from T=${a} to T=${b} (T grew ${b / a}×; O(T²) would be ${(b / a) ** 2}×)`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const tArg = args.find((x) => x.startsWith("--threads="));
  const threads = tArg ? tArg.slice(10).split(",").map(Number) : [1, 2];
  await runAttentionBench({ threads, json: args.includes("--json") });
}
