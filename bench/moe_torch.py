#!/usr/bin/env python3
"""PyTorch 1.13 peer for `npm run bench:moe`: one Mixtral-style MoE layer (HF loop over
experts with index_add), forward + backward, timed at a given thread count.
Prints one JSON line: {"threads", "ms_median", "ms_all", "omp_wait_policy"}.
Run with Debian's /usr/bin/python3 (python3-torch)."""
import json, os, sys, time
import torch
import torch.nn.functional as F

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
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({"threads": threads, "ms_median": times[len(times) // 2], "ms_all": times,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))

if __name__ == "__main__":
    main()
