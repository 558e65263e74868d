"""Float64 PyTorch forward (eval mode) of tiny models of every supported HF MoE family,
reading HF config.json keys and HF parameter names, for the logit-parity fixtures of
test/fixtures/hf/ (written by make_hf_fixtures.py).

Families and what each one's HF modeling file defines (checked against transformers'
modeling_mixtral.py, modeling_phimoe.py, modeling_qwen2_moe.py, modeling_qwen3_moe.py,
modeling_olmoe.py and Skywork-MoE's released remote code):

| family    | norm                         | attention extras                                  | router (eval)                                   |
|-----------|------------------------------|---------------------------------------------------|-------------------------------------------------|
| mixtral   | RMSNorm(rms_norm_eps)        | GQA, optional sliding_window                      | softmax → top-k → renormalise                   |
| phimoe    | LayerNorm with bias (eps = rms_norm_eps) | q/k/v/o bias iff attention_bias; lm_head bias iff lm_head_bias; sliding_window | SparseMixer-v2 eval: two masked softmaxes, ε = router_jitter_noise, no renormalisation |
| qwen2_moe | RMSNorm                      | q/k/v bias (always), no o bias                    | softmax → top-k → renormalise iff norm_topk_prob; + shared expert · sigmoid(shared_expert_gate(x)) |
| qwen3_moe | RMSNorm                      | q_norm/k_norm = RMSNorm over head_dim, per head, on the projection output before RoPE; head_dim may differ from hidden/heads | softmax → top-k → renormalise iff norm_topk_prob |
| olmoe     | RMSNorm                      | q_norm/k_norm = RMSNorm over the whole q (NH·HS) / k (KVH·HS) projection, before RoPE | softmax → top-k → renormalise iff norm_topk_prob |
| skywork   | RMSNorm                      | MHA                                               | (moe_use_logits_norm: z·λ/std_unbiased(z)) → softmax → top-2 → renormalise |

All q/k norms use rms_norm_eps. Qwen2/3 layer l is MoE iff l ∉ mlp_only_layers and
(l+1) % decoder_sparse_step == 0; otherwise a dense SwiGLU `mlp.{gate,up,down}_proj` of
intermediate_size. Qwen experts have moe_intermediate_size; the others intermediate_size.
Skywork: the expert input is multiplied by top_k when neither moe_use_mixtral_gating nor
moe_feature_no_mul_topk is set (released code); this reference refuses that combination,
as the TypeScript loader does. RoPE, GQA mapping and the window rule W_eff = sliding_window
are the ones of moe_ref.py / tools/reference/README.md.

Also modelled (the forward-changing keys, from transformers' modeling_rope_utils.py and each
family's modeling file, written here independently of the TypeScript): rope_scaling of type
linear, llama3, yarn and longrope (PhiMoE short/long mscale; long factors when T >
original_max_position_embeddings); OLMoE clip_qkv (q, k, v clamped after the q/k norm);
Qwen use_sliding_window (window only on layers >= max_window_layers); tied embeddings;
Skywork moe_expert_interval.

Deliberately not: training-mode routing (jitter, SparseMixer sampling), dynamic NTK.
"""

import math

import torch
import torch.nn.functional as F

import moe_ref as M

DT = M.DT


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def kv_heads(cfg):
    return cfg.get("num_key_value_heads") or cfg["num_attention_heads"]


def num_experts(cfg):
    t = cfg["model_type"]
    if t in ("mixtral", "phimoe"):
        return cfg["num_local_experts"]
    if t == "skywork":
        assert len(cfg["num_experts"]) == 1
        return cfg["num_experts"][0]
    return cfg["num_experts"]


def top_k(cfg):
    return cfg.get("num_experts_per_tok", 2)


def moe_module(cfg):
    return "block_sparse_moe" if cfg["model_type"] in ("mixtral", "phimoe", "skywork") else "mlp"


def expert_keys(cfg):
    return ("w1", "w3", "w2") if moe_module(cfg) == "block_sparse_moe" else ("gate_proj", "up_proj", "down_proj")


def is_moe_layer(cfg, l):
    t = cfg["model_type"]
    if t in ("qwen2_moe", "qwen3_moe"):
        step = cfg.get("decoder_sparse_step", 1)
        return l not in cfg.get("mlp_only_layers", []) and step > 0 and (l + 1) % step == 0
    if t == "skywork":
        return (l + 1) % cfg.get("moe_expert_interval", 1) == 0
    return True


def expert_size(cfg):
    return cfg["moe_intermediate_size"] if cfg["model_type"] in ("qwen2_moe", "qwen3_moe") else cfg["intermediate_size"]


def flags(cfg):
    """(layer_norm, qkv_bias, o_bias, qk_norm, lm_head_bias)."""
    t = cfg["model_type"]
    ab = cfg.get("attention_bias", False)
    if t == "phimoe":
        return True, ab, ab, None, cfg.get("lm_head_bias", False)
    if t == "qwen2_moe":
        return False, True, False, None, False
    if t == "qwen3_moe":
        return False, ab, ab, "head", False
    if t == "olmoe":
        return False, ab, ab, "full", False
    return False, False, False, None, False


def param_shapes(cfg):
    """Ordered {HF name: shape} of a family config (HF keys)."""
    H = cfg["hidden_size"]
    V = cfg["vocab_size"]
    NH = cfg["num_attention_heads"]
    KVH = kv_heads(cfg)
    HS = head_dim(cfg)
    E = num_experts(cfg)
    Fe = expert_size(cfg)
    ln, qkvb, ob, qkn, lmb = flags(cfg)
    gk, uk, dk = expert_keys(cfg)
    mod = moe_module(cfg)
    s = {"model.embed_tokens.weight": (V, H)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        s[p + "input_layernorm.weight"] = (H,)
        if ln:
            s[p + "input_layernorm.bias"] = (H,)
        for nm, out in (("q", NH * HS), ("k", KVH * HS), ("v", KVH * HS)):
            s[p + f"self_attn.{nm}_proj.weight"] = (out, H)
            if qkvb:
                s[p + f"self_attn.{nm}_proj.bias"] = (out,)
        s[p + "self_attn.o_proj.weight"] = (H, NH * HS)
        if ob:
            s[p + "self_attn.o_proj.bias"] = (H,)
        if qkn == "head":
            s[p + "self_attn.q_norm.weight"] = (HS,)
            s[p + "self_attn.k_norm.weight"] = (HS,)
        elif qkn == "full":
            s[p + "self_attn.q_norm.weight"] = (NH * HS,)
            s[p + "self_attn.k_norm.weight"] = (KVH * HS,)
        s[p + "post_attention_layernorm.weight"] = (H,)
        if ln:
            s[p + "post_attention_layernorm.bias"] = (H,)
        if is_moe_layer(cfg, l):
            m = p + mod + "."
            s[m + "gate.weight"] = (E, H)
            for e in range(E):
                s[m + f"experts.{e}.{gk}.weight"] = (Fe, H)
                s[m + f"experts.{e}.{uk}.weight"] = (Fe, H)
                s[m + f"experts.{e}.{dk}.weight"] = (H, Fe)
            S = cfg.get("shared_expert_intermediate_size", 0) if cfg["model_type"] == "qwen2_moe" else 0
            if S:
                s[m + "shared_expert.gate_proj.weight"] = (S, H)
                s[m + "shared_expert.up_proj.weight"] = (S, H)
                s[m + "shared_expert.down_proj.weight"] = (H, S)
                s[m + "shared_expert_gate.weight"] = (1, H)
        else:
            I = cfg["intermediate_size"]
            s[p + "mlp.gate_proj.weight"] = (I, H)
            s[p + "mlp.up_proj.weight"] = (I, H)
            s[p + "mlp.down_proj.weight"] = (H, I)
    s["model.norm.weight"] = (H,)
    if ln:
        s["model.norm.bias"] = (H,)
    if not cfg.get("tie_word_embeddings", False):
        s["lm_head.weight"] = (V, H)
    if lmb:
        s["lm_head.bias"] = (V,)
    return s


def init_params(cfg, rng):
    """Float32 numpy parameters in param_shapes order; scales as moe_ref.init_params
    (norm weights 1 + 0.1·N, biases 0.05·N, embeddings N(0,1), linear N(0, 1/fan_in))."""
    out = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.05 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            a = rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = a.astype("float32")
    return out


# ----------------------------------------------------------------------------


def norm(P, prefix, x, cfg):
    if cfg["model_type"] == "phimoe":
        return M.layer_norm(x, P[prefix + ".weight"], P[prefix + ".bias"], cfg["rms_norm_eps"])
    return M.rms_norm(x, P[prefix + ".weight"], cfg["rms_norm_eps"])


def window(cfg, layer):
    t = cfg["model_type"]
    if t in ("mixtral", "phimoe"):
        return cfg.get("sliding_window")
    if t in ("qwen2_moe", "qwen3_moe"):
        if cfg.get("use_sliding_window", False) and cfg.get("sliding_window") is not None and layer >= cfg.get("max_window_layers", 28):
            return cfg["sliding_window"]
    return None


def rope_inv_freq(cfg, T):
    """(inv_freq [HS/2] float64, attention factor) of the config's rope (scaling) at sequence length T."""
    HS = head_dim(cfg)
    base = cfg["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, HS, 2, dtype=DT) / HS))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv, 1.0
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv / rs["factor"], 1.0
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        return torch.where(medium, smoothed, out), 1.0
    if kind == "yarn":
        factor = rs["factor"]
        old = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        bf, bs = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def mscale(sc, m=1.0):
            return 1.0 if sc <= 1 else 0.1 * m * math.log(sc) + 1.0

        att = rs.get("attention_factor")
        if att is None:
            if rs.get("mscale") and rs.get("mscale_all_dim"):
                att = mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
            else:
                att = mscale(factor)

        def corr_dim(rot):
            return (HS * math.log(old / (rot * 2 * math.pi))) / (2 * math.log(base))

        low = max(math.floor(corr_dim(bf)), 0)
        high = min(math.ceil(corr_dim(bs)), HS - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(HS // 2, dtype=DT) - low) / (high - low), 0, 1)
        extrap = 1 - ramp
        pos_freqs = base ** (torch.arange(0, HS, 2, dtype=DT) / HS)
        return (1.0 / (factor * pos_freqs)) * (1 - extrap) + (1.0 / pos_freqs) * extrap, att
    if kind == "longrope":
        old = rs.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"]
        long = T > old
        ext = torch.tensor(rs["long_factor"] if long else rs["short_factor"], dtype=DT)
        f = cfg["max_position_embeddings"] / old
        dflt = 1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(old))
        att = rs.get("long_mscale" if long else "short_mscale", dflt)
        pos_freqs = base ** (torch.arange(0, HS, 2, dtype=DT) / HS)
        return 1.0 / (ext * pos_freqs), att
    raise ValueError(f"rope_scaling {kind} not modelled")


def attention(P, prefix, x, cfg, layer=0):
    B, T, H = x.shape
    NH, KVH, HS = cfg["num_attention_heads"], kv_heads(cfg), head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    qkn = flags(cfg)[3]
    q = M.linear(P, prefix + ".q_proj", x)
    k = M.linear(P, prefix + ".k_proj", x)
    v = M.linear(P, prefix + ".v_proj", x)
    if qkn == "full":  # OLMoE: over the whole projection
        q = M.rms_norm(q, P[prefix + ".q_norm.weight"], eps)
        k = M.rms_norm(k, P[prefix + ".k_norm.weight"], eps)
    q = q.view(B, T, NH, HS)
    k = k.view(B, T, KVH, HS)
    if qkn == "head":  # Qwen3: per head over head_dim
        q = M.rms_norm(q, P[prefix + ".q_norm.weight"], eps)
        k = M.rms_norm(k, P[prefix + ".k_norm.weight"], eps)
    clip = cfg.get("clip_qkv") if cfg["model_type"] == "olmoe" else None
    if clip is not None:  # OLMoE: after the q/k norm, before RoPE
        q = q.clamp(-clip, clip)
        k = k.clamp(-clip, clip)
        v = v.clamp(-clip, clip)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2)
    v = v.view(B, T, KVH, HS).transpose(1, 2)
    if cfg.get("rope_scaling"):
        inv, att = rope_inv_freq(cfg, T)
        ang = torch.arange(T, dtype=DT)[:, None] * inv[None, :]
        cos, sin = torch.cos(ang) * att, torch.sin(ang) * att
    else:
        cos, sin = M.rope_cos_sin(T, HS, cfg["rope_theta"])
    q = M.apply_rope(q, cos, sin)
    k = M.apply_rope(k, cos, sin)
    kv_of_q = torch.arange(NH) // (NH // KVH)
    k = k[:, kv_of_q]
    v = v[:, kv_of_q]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
    s = s.masked_fill(~M.attention_mask(T, window(cfg, layer)), float("-inf"))
    o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, NH * HS)
    return M.linear(P, prefix + ".o_proj", o)


def swiglu(P, prefix, x, keys):
    g, u, d = keys
    a = x @ P[f"{prefix}.{g}.weight"].t()
    b = x @ P[f"{prefix}.{u}.weight"].t()
    return (F.silu(a) * b) @ P[f"{prefix}.{d}.weight"].t()


def route(cfg, z):
    """Eval-mode routing: (experts [N,k], weights [N,k], margin)."""
    t = cfg["model_type"]
    k = top_k(cfg)
    if t == "phimoe":
        r = M.route_sparsemixer(z, cfg["router_jitter_noise"], training=False)
        return r["experts"], r["w_out"], r["margin"]
    if t == "skywork":
        if not (cfg.get("moe_use_mixtral_gating", False) or cfg.get("moe_feature_no_mul_topk", False)):
            raise ValueError("skywork: expert input x top_k (both moe_use_mixtral_gating and moe_feature_no_mul_topk false) not modelled")
        if cfg.get("moe_use_logits_norm", False):
            z = z / (z.std(dim=-1, unbiased=True, keepdim=True) / cfg.get("moe_gate_norm_std", 1.0))
        r = M.route_mixtral(z, k, renormalize=True)
    elif t == "mixtral":
        r = M.route_mixtral(z, k, renormalize=True)
    else:
        r = M.route_mixtral(z, k, renormalize=cfg["norm_topk_prob"])
    return r["experts"], r["w_out"], r["margin"]


def moe(P, prefix, x, cfg):
    """x [N,H] → y [N,H], margin (distance of the routing decisions from a tie)."""
    E = num_experts(cfg)
    z = x @ P[prefix + ".gate.weight"].t()
    experts, w, margin = route(cfg, z)
    keys = expert_keys(cfg)
    y = torch.zeros_like(x)
    for e in range(E):
        t_idx, j_idx = torch.nonzero(experts == e, as_tuple=True)
        if t_idx.numel() == 0:
            continue
        h = swiglu(P, f"{prefix}.experts.{e}", x[t_idx], keys)
        y = y.index_add(0, t_idx, w[t_idx, j_idx][:, None] * h)
    if prefix + ".shared_expert_gate.weight" in P:
        gate = torch.sigmoid(x @ P[prefix + ".shared_expert_gate.weight"].t())  # [N,1]
        y = y + gate * swiglu(P, prefix + ".shared_expert", x, ("gate_proj", "up_proj", "down_proj"))
    return y, margin


def forward(P, input_ids, cfg):
    """P {HF name: float64 tensor}; input_ids [B,T] long → logits [B,T,V], min routing margin."""
    B, T = input_ids.shape
    h = P["model.embed_tokens.weight"][input_ids]
    margin = float("inf")
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        h = h + attention(P, p + ".self_attn", norm(P, p + ".input_layernorm", h, cfg), cfg, l)
        xn = norm(P, p + ".post_attention_layernorm", h, cfg).reshape(B * T, -1)
        if is_moe_layer(cfg, l):
            y, m = moe(P, f"{p}.{moe_module(cfg)}", xn, cfg)
            margin = min(margin, m)
        else:
            y = swiglu(P, p + ".mlp", xn, ("gate_proj", "up_proj", "down_proj"))
        h = h + y.view(B, T, -1)
    h = norm(P, "model.norm", h, cfg)
    head = P["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else P["lm_head.weight"]
    logits = h @ head.t()
    if "lm_head.bias" in P:
        logits = logits + P["lm_head.bias"]
    return logits, margin
