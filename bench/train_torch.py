#!/usr/bin/env python3
"""PyTorch 1.13 peer for `npm run bench:train`: the same MoE transformer as moe-ts trains
(RMSNorm, GQA attention with RoPE rotate_half, Skywork-normalised softmax top-k router,
dropless HF-Mixtral-style expert loop, untied LM head, Skywork aux loss), one training step =
forward + backward + torch.optim.AdamW, f32, at a given thread count.
argv: V C L NH KVH E K F B T threads reps. Prints one JSON line {"ms_median", "ms_all", "threads",
"cpu_s", "wall_s"} (getrusage(RUSAGE_SELF) CPU seconds and wall seconds over the timed loop).
Run with Debian's /usr/bin/python3."""
import json, math, os, resource, sys, time
import torch
import torch.nn.functional as F

def cpu_seconds():
    """User + system CPU seconds of this process, all threads (OpenBLAS's and OpenMP's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def main():
    V, C, L, NH, KVH, E, K, FF, B, T, threads, reps = (int(a) for a in sys.argv[1:13])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    HS = C // NH
    p = lambda *s: (torch.randn(*s) * 0.02).requires_grad_()
    ones = lambda n: torch.ones(n, requires_grad=True)
    params = {"embed": p(V, C), "normf": ones(C), "head": p(V, C)}
    for l in range(L):
        params.update({f"{l}.n1": ones(C), f"{l}.q": p(NH * HS, C), f"{l}.k": p(KVH * HS, C), f"{l}.v": p(KVH * HS, C),
                       f"{l}.o": p(C, NH * HS), f"{l}.n2": ones(C), f"{l}.g": p(E, C), f"{l}.w1": p(E, FF, C),
                       f"{l}.w3": p(E, FF, C), f"{l}.w2": p(E, C, FF)})
    opt = torch.optim.AdamW(params.values(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    inv = 1.0 / (10000 ** (torch.arange(0, HS // 2, dtype=torch.float32) * 2 / HS))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    mask = torch.full((T, T), float("-inf")).triu(1)
    ids = torch.randint(0, V, (B, T))
    tg = torch.randint(0, V, (B, T))

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rope(x):
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * cos[None, :, None, :] + rot * sin[None, :, None, :]

    def step():
        x = params["embed"][ids]
        aux = 0.0
        for l in range(L):
            h = rms(x, params[f"{l}.n1"])
            q = rope((h @ params[f"{l}.q"].t()).view(B, T, NH, HS))
            k = rope((h @ params[f"{l}.k"].t()).view(B, T, KVH, HS))
            v = (h @ params[f"{l}.v"].t()).view(B, T, KVH, HS)
            k = k.repeat_interleave(NH // KVH, dim=2)
            v = v.repeat_interleave(NH // KVH, dim=2)
            att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / math.sqrt(HS) + mask
            y = (att.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, NH * HS)
            x = x + y @ params[f"{l}.o"].t()
            h = rms(x, params[f"{l}.n2"]).view(B * T, C)
            z = h @ params[f"{l}.g"].t()
            z = z / z.std(-1, keepdim=True)
            pr = z.softmax(-1)
            w, idx = pr.topk(K, -1)
            w = w / w.sum(-1, keepdim=True)
            aux = aux + ((1.0 / E - pr.mean(0)) ** 2).sum()
            out = torch.zeros_like(h)
            sel = F.one_hot(idx, E).permute(2, 1, 0)
            for e in range(E):
                kk, tok = torch.where(sel[e])
                he = h[tok]
                ye = (F.silu(he @ params[f"{l}.w1"][e].t()) * (he @ params[f"{l}.w3"][e].t())) @ params[f"{l}.w2"][e].t()
                out.index_add_(0, tok, ye * w[tok, kk, None])
            x = x + out.view(B, T, C)
        logits = rms(x, params["normf"]) @ params["head"].t()
        loss = F.cross_entropy(logits.view(B * T, V), tg.view(-1)) + 0.01 * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    times = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    cpu_s, wall_s = cpu_seconds() - cpu0, time.perf_counter() - wall0
    times.sort()
    print(json.dumps({"threads": threads, "ms_median": times[len(times) // 2], "ms_all": times, "cpu_s": cpu_s, "wall_s": wall_s, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}))

if __name__ == "__main__":
    main()
