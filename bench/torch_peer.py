"""PyTorch peer for bench/kernels.ts: times torch.mm (and a per-group torch.mm loop, the HF
Mixtral way of running experts) for the shapes given on argv as JSON, and prints one JSON
object on stdout; each record carries "cpu": getrusage(RUSAGE_SELF) CPU seconds (all threads) /
wall seconds over its timed calls. Run by kernels.ts with /usr/bin/python3 in common.ts's
peerEnv (OMP/OPENBLAS/MKL_NUM_THREADS = threads, OMP_WAIT_POLICY=PASSIVE).
Not: a correctness check (kernels.ts validates our kernels against the ref backend).

argv[1] = {"threads": t, "reps": r, "warmup": w,
           "gemm": [[M, K, N, transB], ...], "grouped": {"sizes": [...], "K": K, "N": N, "transW": b}}
FLOP formula: 2·M·N·K per GEMM; GFLOP/s = flops / median seconds / 1e9.
"""
import json
import os
import resource
import statistics
import sys
import time

import torch


def cpu_seconds():
    """User + system CPU seconds of this process, all threads (OpenBLAS's and OpenMP's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def median_seconds(fn, reps, warmup):
    """(median seconds, CPU seconds / wall seconds over the timed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    reps, warmup = cfg["reps"], cfg["warmup"]
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gemm": [],
        "grouped": None,
    }
    with torch.no_grad():
        for M, K, N, trans_b in cfg["gemm"]:
            a = torch.randn(M, K)
            b = torch.randn(N, K) if trans_b else torch.randn(K, N)
            c = torch.empty(M, N)
            bop = b.t() if trans_b else b
            s, cpu = median_seconds(lambda: torch.mm(a, bop, out=c), reps, warmup)
            out["gemm"].append({"M": M, "K": K, "N": N, "gflops": 2.0 * M * N * K / s / 1e9, "cpu": cpu})
        g = cfg.get("grouped")
        if g:
            sizes, K, N, trans_w = g["sizes"], g["K"], g["N"], g["transW"]
            total = sum(sizes)
            x = torch.randn(total, K)
            w = torch.randn(len(sizes), N, K) if trans_w else torch.randn(len(sizes), K, N)
            y = torch.empty(total, N)
            offs = [0]
            for s_ in sizes:
                offs.append(offs[-1] + s_)

            def run():
                for e in range(len(sizes)):
                    if sizes[e] == 0:
                        continue
                    we = w[e].t() if trans_w else w[e]
                    torch.mm(x[offs[e]:offs[e + 1]], we, out=y[offs[e]:offs[e + 1]])

            s, cpu = median_seconds(run, reps, warmup)
            out["grouped"] = {"gflops": 2.0 * total * N * K / s / 1e9, "cpu": cpu}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
