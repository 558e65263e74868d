"""Plain-PyTorch float64 reference of tiny decoder-only MoE transformers.

Written from the formulas of /work/shared/docs/moe-techniques.md §1-§4 (not copied
from HF); parameter and config names follow HF (mixtral / phimoe / skywork).
Every convention implemented here is stated in tools/reference/README.md, which is
the contract the TypeScript model is written from.

Deliberately not: fast, batched over experts, a KV cache, input jitter (must be 0),
expert/tensor parallelism, rope scaling, tied embeddings.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

DT = torch.float64
IGNORE_INDEX = -100


# ----------------------------------------------------------------------------
# parameters


def param_shapes(cfg):
    """Ordered {HF name: shape} for a config dict (HF key names)."""
    H = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    NH = cfg["num_attention_heads"]
    KVH = cfg["num_key_value_heads"]
    HS = H // NH
    E = cfg["num_local_experts"]
    layer_norm = cfg["model_type"] == "phimoe"
    ab = cfg.get("attention_bias", False)
    shapes = {"model.embed_tokens.weight": (V, H)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes[p + "input_layernorm.weight"] = (H,)
        if layer_norm:
            shapes[p + "input_layernorm.bias"] = (H,)
        for nm, out in (("q", NH * HS), ("k", KVH * HS), ("v", KVH * HS)):
            shapes[p + f"self_attn.{nm}_proj.weight"] = (out, H)
            if ab:
                shapes[p + f"self_attn.{nm}_proj.bias"] = (out,)
        shapes[p + "self_attn.o_proj.weight"] = (H, NH * HS)
        if ab:
            shapes[p + "self_attn.o_proj.bias"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        if layer_norm:
            shapes[p + "post_attention_layernorm.bias"] = (H,)
        shapes[p + "block_sparse_moe.gate.weight"] = (E, H)
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            shapes[q + "w1.weight"] = (I, H)
            shapes[q + "w2.weight"] = (H, I)
            shapes[q + "w3.weight"] = (I, H)
    shapes["model.norm.weight"] = (H,)
    if layer_norm:
        shapes["model.norm.bias"] = (H,)
    shapes["lm_head.weight"] = (V, H)
    if cfg.get("lm_head_bias", False):
        shapes["lm_head.bias"] = (V,)
    return shapes


def init_params(cfg, rng, gate_scale=1.0):
    """Deterministic float32 parameters (numpy) drawn from `rng` in param_shapes order.

    Scales are chosen so every path carries signal (not HF's init): linear weights
    N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2), biases N(0, 0.05^2), embeddings N(0, 1),
    router N(0, gate_scale^2/H).
    """
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.05 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            a = rng.standard_normal(shape)
        elif name.endswith("gate.weight"):
            a = gate_scale * rng.standard_normal(shape) / math.sqrt(shape[1])
        else:
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = a.astype(np.float32)
    return out


# ----------------------------------------------------------------------------
# building blocks


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def norm(P, prefix, x, cfg):
    if cfg["model_type"] == "phimoe":
        return layer_norm(x, P[prefix + ".weight"], P[prefix + ".bias"], cfg["rms_norm_eps"])
    return rms_norm(x, P[prefix + ".weight"], cfg["rms_norm_eps"])


def linear(P, prefix, x):
    y = x @ P[prefix + ".weight"].t()
    b = P.get(prefix + ".bias")
    return y if b is None else y + b


def rope_cos_sin(T, HS, theta):
    half = HS // 2
    inv_freq = theta ** (-torch.arange(half, dtype=DT) * 2.0 / HS)  # θ^(−2i/HS)
    ang = torch.arange(T, dtype=DT)[:, None] * inv_freq[None, :]  # [T, HS/2]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    """x [B, heads, T, HS]; HF rotate_half pairing: channel i with i + HS/2."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def window_eff(cfg):
    """Effective window: query i attends key j iff 0 <= i-j < W_eff (None = full causal)."""
    w = cfg.get("sliding_window")
    return None if w is None else int(w)


def attention_mask(T, W):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    d = i - j
    ok = d >= 0
    if W is not None:
        ok = ok & (d < W)
    return ok


def attention(P, prefix, x, cfg):
    B, T, H = x.shape
    NH = cfg["num_attention_heads"]
    KVH = cfg["num_key_value_heads"]
    HS = H // NH
    q = linear(P, prefix + ".q_proj", x).view(B, T, NH, HS).transpose(1, 2)
    k = linear(P, prefix + ".k_proj", x).view(B, T, KVH, HS).transpose(1, 2)
    v = linear(P, prefix + ".v_proj", x).view(B, T, KVH, HS).transpose(1, 2)
    cos, sin = rope_cos_sin(T, HS, cfg["rope_theta"])
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    kv_of_q = torch.arange(NH) // (NH // KVH)  # query head h uses kv head h // (NH/KVH)
    k = k[:, kv_of_q]
    v = v[:, kv_of_q]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
    mask = attention_mask(T, window_eff(cfg))
    s = s.masked_fill(~mask, float("-inf"))
    a = torch.softmax(s, dim=-1)
    o = (a @ v).transpose(1, 2).reshape(B, T, NH * HS)
    return linear(P, prefix + ".o_proj", o)


def expert_forward(P, prefix, x):
    """SwiGLU expert: w2( silu(w1 x) * w3 x )."""
    a = x @ P[prefix + ".w1.weight"].t()
    b = x @ P[prefix + ".w3.weight"].t()
    return (F.silu(a) * b) @ P[prefix + ".w2.weight"].t()


# ----------------------------------------------------------------------------
# routers. Each returns a dict:
#   experts [N,k] long, w_out [N,k] (forward combine weight, carries the router
#   gradient), w_plain [N,k] detached (sparsemixer: unscaled w, for Algorithm-1
#   expert gradients), probs [N,E] (the router's full softmax for the aux losses),
#   plus extras for the golden file.


def stable_topk(p, k):
    """Top-k along the last dim; ties -> lower index (stable sort of −p)."""
    order = torch.sort(-p.detach(), dim=-1, stable=True).indices
    return order[:, :k]


def topk_margin(p, k):
    """Smallest gap between the k-th and (k+1)-th largest entry over tokens (a decision
    margin: how far the golden routing is from a tie)."""
    srt = torch.sort(p.detach(), dim=-1, descending=True).values
    return float((srt[:, k - 1] - srt[:, k]).min()) if p.shape[1] > k else float("inf")


def route_mixtral(z, k, renormalize=True):
    p = torch.softmax(z, dim=-1)
    idx = stable_topk(p, k)
    w = p.gather(1, idx)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    return {"experts": idx, "w_out": w, "w_plain": None, "probs": p, "margin": topk_margin(p, k)}


def route_skywork(z, k, lam=1.0):
    std = z.std(dim=-1, unbiased=True, keepdim=True)
    zt = z / (std / lam)  # no mean subtraction (released code)
    p = torch.softmax(zt, dim=-1)
    idx = stable_topk(p, k)
    w = p.gather(1, idx)
    w = w / w.sum(-1, keepdim=True)
    return {"experts": idx, "w_out": w, "w_plain": None, "probs": p, "margin": topk_margin(p, k)}


class SparseMixerMultiplier(torch.autograd.Function):
    """forward: w·s.  backward to z: g·w·(onehot(D) − p), g = dL/d(w·s); nothing else."""

    @staticmethod
    def forward(ctx, z, p, onehot, w, s):
        ctx.save_for_backward(p, onehot, w)
        return w * s

    @staticmethod
    def backward(ctx, g):
        p, onehot, w = ctx.saved_tensors
        gz = (g * w)[:, None] * (onehot - p)
        return gz, None, None, None, None


def _first_argmax(x):
    """argmax along last dim, ties -> lowest index."""
    m = x.max(dim=-1, keepdim=True).values
    E = x.shape[-1]
    ar = torch.arange(E).expand_as(x)
    return torch.where(x == m, ar, torch.full_like(ar, E)).min(dim=-1).values


def sparsemixer_pick(z, z_avail, eps, training, gumbel=None, bern=None, heun_scale=1.0 / 3.0):
    """One SparseMixer-v2 pick. z, z_avail [N,E]; gumbel [N,E]; bern [N] (0/1)."""
    with torch.no_grad():
        zd = z.detach()
        m = z_avail.detach().max(dim=-1, keepdim=True).values
        factor = torch.maximum(zd.abs(), m)
        masked = ((m - zd) / factor) > (2.0 * eps)
        zhat = z_avail.detach().masked_fill(masked, float("-inf"))
        p = torch.softmax(zhat, dim=-1)
        if training:
            D = _first_argmax(zhat + gumbel)
        else:
            D = _first_argmax(zhat)
        # decision margins: distance of every threshold ratio from 2ε (entries still
        # available), and the gap between the best and second-best candidate
        ratio = ((m - zd) / factor)[~torch.isinf(z_avail)]
        margin = float((ratio - 2.0 * eps).abs().min())
        score = zhat + gumbel if training else zhat
        top2 = torch.sort(score, dim=-1, descending=True).values[:, :2]
        gap = top2[:, 0] - top2[:, 1]
        gap = gap[~torch.isinf(gap)]
        if gap.numel():
            margin = min(margin, float(gap.min()))
        onehot = F.one_hot(D, z.shape[-1]).to(DT)
        w = p.gather(1, D[:, None])[:, 0]
        if training:
            is_max = D == _first_argmax(p)
            keep1 = is_max | (bern > 0)
            s = torch.where(keep1, torch.ones_like(w), torch.full_like(w, heun_scale))
        else:
            s = torch.ones_like(w)
    n_avail = (~torch.isinf(zhat)).sum(-1)
    if training:
        w_out = SparseMixerMultiplier.apply(z, p, onehot, w, s)
    else:
        # inference: w = p_D with ordinary autograd through the masked softmax
        zhat_g = z.masked_fill(torch.isinf(zhat), float("-inf"))
        w_out = torch.softmax(zhat_g, dim=-1).gather(1, D[:, None])[:, 0]
    return D, w_out, w, s, n_avail, margin


def route_sparsemixer(z, eps, training, gumbel=None, bern=None, heun_scale=1.0 / 3.0):
    """Top-2 SparseMixer-v2; gumbel [N,2,E], bern [N,2]. No renormalisation."""
    g0 = gumbel[:, 0] if training else None
    g1 = gumbel[:, 1] if training else None
    b0 = bern[:, 0] if training else None
    b1 = bern[:, 1] if training else None
    D1, wo1, w1, s1, n1, m1 = sparsemixer_pick(z, z.detach(), eps, training, g0, b0, heun_scale)
    z_avail2 = z.detach().scatter(1, D1[:, None], float("-inf"))
    D2, wo2, w2, s2, n2, m2 = sparsemixer_pick(z, z_avail2, eps, training, g1, b1, heun_scale)
    return {
        "experts": torch.stack([D1, D2], 1),
        "w_out": torch.stack([wo1, wo2], 1),
        "w_plain": torch.stack([w1, w2], 1),
        "scale": torch.stack([s1, s2], 1),
        "n_avail": torch.stack([n1, n2], 1),
        "probs": torch.softmax(z, dim=-1),  # plain unmasked softmax (GRIN global LB)
        "margin": min(m1, m2),
    }


def capacity_keep(experts, weights, E, cf):
    """[N,k] bool: per expert keep the C = ceil(cf·k·N/E) assignments with the highest
    routing weight; ties -> earlier token, then lower k slot."""
    N, k = experts.shape
    C = int(math.ceil(cf * k * N / E))
    keep = torch.zeros(N, k, dtype=torch.bool)
    ex = experts.tolist()
    wt = weights.detach().tolist()
    margin = float("inf")
    for e in range(E):
        cand = [(-wt[t][j], t, j) for t in range(N) for j in range(k) if ex[t][j] == e]
        cand.sort()
        for _, t, j in cand[:C]:
            keep[t, j] = True
        if len(cand) > C:
            margin = min(margin, cand[C][0] - cand[C - 1][0])
    return keep, C, margin


# ----------------------------------------------------------------------------
# MoE layer and model


def moe_layer(P, prefix, x, cfg, case, draws=None, layer=0):
    """x [N,H] -> y [N,H], route dict (with z = router logits)."""
    E = cfg["num_local_experts"]
    k = cfg["num_experts_per_tok"]
    z = x @ P[prefix + ".gate.weight"].t()
    kind = case["router"]
    training = case["mode"] == "train"
    if kind == "mixtral":
        r = route_mixtral(z, k)
    elif kind == "skywork":
        r = route_skywork(z, k, case.get("moe_gate_norm_std", 1.0))
    elif kind == "sparsemixer_v2":
        assert k == 2
        g = b = None
        if training:
            g = draws[f"sparsemixer.gumbel.L{layer}"]
            b = draws[f"sparsemixer.bernoulli.L{layer}"]
        r = route_sparsemixer(z, cfg["router_jitter_noise"], training, g, b,
                              case.get("heun_scale", 1.0 / 3.0))
    else:
        raise ValueError(kind)
    r["z"] = z
    experts, w_out, w_plain = r["experts"], r["w_out"], r["w_plain"]
    if case.get("capacity_factor") is not None:
        keep, C, cm = capacity_keep(experts, w_out, E, case["capacity_factor"])
        r["keep"] = keep
        r["capacity"] = C
        r["margin"] = min(r["margin"], cm)
    else:
        keep = torch.ones_like(experts, dtype=torch.bool)
    unscaled = (kind == "sparsemixer_v2" and training and not case.get("scale_expert_grad", False))
    y = torch.zeros_like(x)
    for e in range(E):
        t_idx, j_idx = torch.nonzero((experts == e) & keep, as_tuple=True)
        if t_idx.numel() == 0:
            continue
        h = expert_forward(P, f"{prefix}.experts.{e}", x[t_idx])
        wo = w_out[t_idx, j_idx][:, None]
        if unscaled:
            wp = w_plain[t_idx, j_idx][:, None]
            # value wo·h; dh = wp·dy (Algorithm 1); d(wo) = <dy, h>
            contrib = wo * h.detach() + wp * h - wp * h.detach()
        else:
            contrib = wo * h
        y = y.index_add(0, t_idx, contrib)
    return y, r


def forward(P, input_ids, cfg, case, draws=None):
    """P: {name: float64 tensor}; input_ids [B,T] long. Returns logits [B,T,V], routes."""
    B, T = input_ids.shape
    h = P["model.embed_tokens.weight"][input_ids]
    routes = []
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        h = h + attention(P, p + ".self_attn", norm(P, p + ".input_layernorm", h, cfg), cfg)
        xn = norm(P, p + ".post_attention_layernorm", h, cfg)
        y, r = moe_layer(P, p + ".block_sparse_moe", xn.reshape(B * T, -1), cfg, case, draws, l)
        routes.append(r)
        h = h + y.view(B, T, -1)
    h = norm(P, "model.norm", h, cfg)
    logits = linear(P, "lm_head", h)
    return logits, routes


# ----------------------------------------------------------------------------
# losses


def cross_entropy(logits, targets):
    V = logits.shape[-1]
    lf = logits.reshape(-1, V)
    tf = targets.reshape(-1)
    valid = tf != IGNORE_INDEX
    lse = torch.logsumexp(lf, dim=-1)
    picked = lf.gather(1, tf.clamp(min=0)[:, None])[:, 0]
    nll = (lse - picked)[valid]
    return nll.sum() / valid.sum()


def skywork_aux(probs):
    E = probs.shape[1]
    return ((1.0 / E - probs.mean(0)) ** 2).sum()


def switch_aux(probs, experts, E):
    """E · Σ f_i P_i, f_i = count_i/(k·N) (no grad), P_i = mean_t probs_ti."""
    N, k = experts.shape
    counts = torch.bincount(experts.reshape(-1), minlength=E).to(DT)
    f = counts / (k * N)
    return E * (f * probs.mean(0)).sum()


def z_loss(z):
    return (torch.logsumexp(z, dim=-1) ** 2).mean()


def losses(logits, targets, routes, cfg, case):
    """Returns (total, {component name: value}); components are unweighted."""
    E = cfg["num_local_experts"]
    comp = {"loss.ce": cross_entropy(logits, targets)}
    total = comp["loss.ce"]
    aux_kind = case.get("aux_kind")
    for l, r in enumerate(routes):
        if aux_kind is not None:
            if aux_kind == "skywork":
                a = skywork_aux(r["probs"])
            elif aux_kind in ("switch", "grin_global"):
                a = switch_aux(r["probs"], r["experts"], E)
            else:
                raise ValueError(aux_kind)
            comp[f"loss.aux.L{l}"] = a
            total = total + case["aux_coef"] * a
        if case.get("z_coef", 0.0):
            zl = z_loss(r["z"])
            comp[f"loss.z.L{l}"] = zl
            total = total + case["z_coef"] * zl
    return total, comp


def make_draws(cfg, N, rng):
    """SparseMixer draws: gumbel −log(−log U) [N,2,E] and Bernoulli(1/4) [N,2] per layer."""
    E = cfg["num_local_experts"]
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        u = rng.uniform(size=(N, 2, E))
        u = np.clip(u, 1e-12, 1 - 1e-12)
        out[f"sparsemixer.gumbel.L{l}"] = -np.log(-np.log(u))
        out[f"sparsemixer.bernoulli.L{l}"] = (rng.uniform(size=(N, 2)) < 0.25).astype(np.int32)
    return out
