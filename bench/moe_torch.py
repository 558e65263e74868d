#!/usr/bin/env python3
"""PyTorch 1.13 peer for `npm run bench:moe`: one Mixtral-style MoE layer (HF loop over
experts with index_add), forward + backward, timed at a given thread count.
Prints one JSON line: {"threads", "ms_median", "ms_all", "cpu_s", "wall_s", "omp_wait_policy"} (cpu_s:
getrusage(RUSAGE_SELF) user+system seconds over the timed loop, all threads; wall_s: its wall time).
Run with Debian's /usr/bin/python3 (python3-torch)."""
import json, os, resource, sys, time
import torch
import torch.nn.functional as F

def cpu_seconds():
    """User + system CPU seconds of this process, all threads (OpenBLAS's and OpenMP's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def main():
    T, C, E, K, FF, threads, reps = (int(a) for a in sys.argv[1:8])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(T, C, requires_grad=True)
    wg = (torch.randn(E, C) * 0.02).requires_grad_()
    w1 = (torch.randn(E, FF, C) * 0.02).requires_grad_()
    w3 = (torch.randn(E, FF, C) * 0.02).requires_grad_()
    w2 = (torch.randn(E, C, FF) * 0.02).requires_grad_()
    dy = torch.randn(T, C)

    def step():
        logits = x @ wg.t()
        p = F.softmax(logits, dim=-1)
        w, idx = torch.topk(p, K, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = F.one_hot(idx, E).permute(2, 1, 0)  # E, K, T
        for e in range(E):
            k, tok = torch.where(mask[e])
            h = x[tok]
            y = (F.silu(h @ w1[e].t()) * (h @ w3[e].t())) @ w2[e].t()
            out.index_add_(0, tok, y * w[tok, k, None])
        out.backward(dy)
        for t in (x, wg, w1, w3, w2):
            t.grad = None

    step()
    times = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    cpu_s, wall_s = cpu_seconds() - cpu0, time.perf_counter() - wall0
    times.sort()
    print(json.dumps({"threads": threads, "ms_median": times[len(times) // 2], "ms_all": times, "cpu_s": cpu_s, "wall_s": wall_s,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))

if __name__ == "__main__":
    main()
