"""Writes the golden files test/golden/<case>.safetensors from tools/reference/moe_ref.py
and runs the reference's self-checks first (finite differences in float64, the
SparseMixer-v2 gradient against an independent numpy backprop, E=1/k=1 == dense
SwiGLU, safetensors round trip). Any failed check aborts without writing.

Usage:  /usr/bin/python3 tools/reference/make_golden.py [--out test/golden] [--check-only]

Deliberately not: a test runner for the TypeScript side; it only produces files.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref as M  # noqa: E402
import safetensors_io as st  # noqa: E402

torch.set_num_threads(1)
B, T = 2, 8

BASE = {
    "model_type": "mixtral",
    "vocab_size": 61,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "sliding_window": None,
    "attention_bias": False,
    "lm_head_bias": False,
    "router_jitter_noise": 0.0,
    "input_jitter_noise": 0.0,
    "tie_word_embeddings": False,
}

MIXTRAL = dict(BASE)
SKYWORK = dict(BASE, model_type="skywork", num_key_value_heads=4, rms_norm_eps=1e-6)
PHIMOE = dict(BASE, model_type="phimoe", attention_bias=True, lm_head_bias=True,
              sliding_window=4, router_jitter_noise=0.4)

# every routing decision of a golden case (top-k order, SparseMixer threshold and pick,
# capacity cut) must be at least this far from a tie, so float32 implementations agree
MIN_MARGIN = 1e-3

# seed per family: cases of one family share parameters, inputs and draws.
SEEDS = {"mixtral": 1032, "skywork": 2041, "phimoe": 3003}


def case(name, cfg, **kw):
    c = {"name": name, "router": "mixtral", "mode": "train", "aux_kind": None, "aux_coef": 0.0,
         "z_coef": 0.0, "capacity_factor": None, "drop_policy": None, "scale_expert_grad": False,
         "ignore_index": M.IGNORE_INDEX, "seed": SEEDS[cfg["model_type"]], "batch": B, "seq": T,
         "sliding_window_eff": M.window_eff(cfg)}
    c.update(kw)
    if c["capacity_factor"] is not None:
        c["drop_policy"] = "probs"
    if c["router"] == "skywork":
        c["moe_gate_norm_std"] = 1.0
    if c["router"] == "sparsemixer_v2":
        c.update(sparsemixer_eps=cfg["router_jitter_noise"], heun_scale=1.0 / 3.0, bernoulli_p=0.25)
    return name, cfg, c


CASES = [
    case("mixtral_tiny", MIXTRAL),
    case("mixtral_tiny_aux", MIXTRAL, aux_kind="skywork", aux_coef=0.01, z_coef=1e-3),
    case("mixtral_tiny_switch", MIXTRAL, aux_kind="switch", aux_coef=0.02),
    case("skywork_tiny", SKYWORK, router="skywork", aux_kind="skywork", aux_coef=0.01),
    case("mixtral_tiny_capacity", MIXTRAL, capacity_factor=1.0),
    case("phimoe_tiny_train", PHIMOE, router="sparsemixer_v2", aux_kind="grin_global", aux_coef=0.01),
    case("phimoe_tiny_train_scaled", PHIMOE, router="sparsemixer_v2", aux_kind="grin_global",
         aux_coef=0.01, scale_expert_grad=True),
    case("phimoe_tiny_eval", PHIMOE, router="sparsemixer_v2", mode="eval"),
]


# ----------------------------------------------------------------------------


def build_inputs(cfg, c):
    """Deterministic params (f32 numpy), input_ids, targets, draws for a case."""
    rng = np.random.default_rng(c["seed"])
    params = M.init_params(cfg, rng)
    V = cfg["vocab_size"]
    ids = rng.integers(0, V, size=(B, T)).astype(np.int32)
    tg = rng.integers(0, V, size=(B, T)).astype(np.int32)
    tg[1, 3] = M.IGNORE_INDEX
    draws = M.make_draws(cfg, B * T, rng) if cfg["model_type"] == "phimoe" else {}
    return params, ids, tg, draws


def to_torch(params, requires_grad=False):
    return {k: torch.tensor(v, dtype=M.DT, requires_grad=requires_grad) for k, v in params.items()}


def draws_torch(draws):
    return {k: torch.tensor(v, dtype=(M.DT if "gumbel" in k else torch.int64)) for k, v in draws.items()}


def run(P, ids, tg, cfg, c, D):
    logits, routes = M.forward(P, torch.tensor(ids, dtype=torch.long), cfg, c, D)
    if c["mode"] == "eval":
        return logits, routes, None, None
    total, comp = M.losses(logits, torch.tensor(tg, dtype=torch.long), routes, cfg, c)
    return logits, routes, total, comp


# ----------------------------------------------------------------------------
# self-checks


def fd_check(name, cfg, c, params, ids, tg, D, grads, names, per=3, h=1e-6, tol=2e-6):
    """Central differences (f64) of the total loss vs autograd for a few entries."""
    base = to_torch(params)
    rng = np.random.default_rng(7)
    worst = 0.0
    for pn in names:
        g = grads[pn].reshape(-1)
        picks = {int(np.argmax(np.abs(g)))} | set(int(i) for i in rng.integers(0, g.size, per - 1))
        for i in sorted(picks):
            vals = []
            for sgn in (1, -1):
                P = dict(base)
                t = P[pn].clone().reshape(-1)
                t[i] += sgn * h
                P[pn] = t.reshape(base[pn].shape)
                with torch.no_grad():
                    _, _, L, _ = run(P, ids, tg, cfg, c, D)
                vals.append(float(L))
            fd = (vals[0] - vals[1]) / (2 * h)
            err = abs(fd - g[i]) / max(1e-3, abs(fd), abs(g[i]))
            worst = max(worst, err)
            if err > tol:
                raise AssertionError(f"{name}: FD mismatch {pn}[{i}] fd={fd} ad={g[i]} rel={err}")
    return worst


def fd_check_eval(cfg, c, params, ids, names, h=1e-6, tol=2e-6):
    """Eval-mode routing is differentiable (w = p_D of a masked softmax): check a scalar
    functional of the logits (fixed random weights) against finite differences."""
    rng = np.random.default_rng(11)
    Wl = torch.tensor(rng.standard_normal((B, T, cfg["vocab_size"])), dtype=M.DT)
    P = to_torch(params, True)
    logits, _ = M.forward(P, torch.tensor(ids, dtype=torch.long), cfg, c)
    (logits * Wl).sum().backward()
    worst = 0.0
    base = to_torch(params)
    for pn in names:
        g = P[pn].grad.reshape(-1).numpy()
        for i in {int(np.argmax(np.abs(g))), int(rng.integers(0, g.size))}:
            vals = []
            for sgn in (1, -1):
                Q = dict(base)
                t = Q[pn].clone().reshape(-1)
                t[i] += sgn * h
                Q[pn] = t.reshape(base[pn].shape)
                with torch.no_grad():
                    lg, _ = M.forward(Q, torch.tensor(ids, dtype=torch.long), cfg, c)
                vals.append(float((lg * Wl).sum()))
            fd = (vals[0] - vals[1]) / (2 * h)
            err = abs(fd - g[i]) / max(1e-3, abs(fd), abs(g[i]))
            worst = max(worst, err)
            if err > tol:
                raise AssertionError(f"eval FD mismatch {pn}[{i}] fd={fd} ad={g[i]} rel={err}")
    return worst


def _np_silu(a):
    return a / (1.0 + np.exp(-a))


def _np_pick(z, z_avail, eps, gumbel, bern, third):
    N, E = z.shape
    m = z_avail.max(-1, keepdims=True)
    masked = (m - z) / np.maximum(np.abs(z), m) > 2 * eps
    zh = np.where(masked, -np.inf, z_avail)
    ex = np.exp(zh - zh.max(-1, keepdims=True))
    p = ex / ex.sum(-1, keepdims=True)
    D = np.argmax(zh + gumbel, -1)  # np.argmax returns the first maximum
    w = p[np.arange(N), D]
    s = np.where((D == np.argmax(p, -1)) | (bern > 0), 1.0, third)
    return D, w, s, p


def sparsemixer_layer_check(cfg, c, params, draws, layer, scaled):
    """Independent numpy forward+backward of one SparseMixer-v2 MoE layer (training)
    vs the torch reference (custom Function + detach trick)."""
    rng = np.random.default_rng(5 + layer)
    N, H, E = B * T, cfg["hidden_size"], cfg["num_local_experts"]
    x = rng.standard_normal((N, H))
    dy = rng.standard_normal((N, H))
    pre = f"model.layers.{layer}.block_sparse_moe"
    cc = dict(c, scale_expert_grad=scaled)
    P = to_torch(params, True)
    xt = torch.tensor(x, requires_grad=True)
    y, r = M.moe_layer(P, pre, xt, cfg, cc, draws_torch(draws), layer)
    y.backward(torch.tensor(dy))
    # numpy
    pf = {k: v.astype(np.float64) for k, v in params.items()}
    Wg = pf[pre + ".gate.weight"]
    z = x @ Wg.T
    G = draws[f"sparsemixer.gumbel.L{layer}"]
    Bn = draws[f"sparsemixer.bernoulli.L{layer}"]
    eps = cfg["router_jitter_noise"]
    D1, w1, s1, p1 = _np_pick(z, z, eps, G[:, 0], Bn[:, 0], 1.0 / 3.0)
    za = z.copy()
    za[np.arange(N), D1] = -np.inf
    D2, w2, s2, p2 = _np_pick(z, za, eps, G[:, 1], Bn[:, 1], 1.0 / 3.0)
    yn = np.zeros((N, H))
    dx = np.zeros((N, H))
    dz = np.zeros((N, E))
    dW = {}
    for (D, w, s, p) in ((D1, w1, s1, p1), (D2, w2, s2, p2)):
        for t in range(N):
            e = D[t]
            q = f"{pre}.experts.{e}"
            W1, W2, W3 = pf[q + ".w1.weight"], pf[q + ".w2.weight"], pf[q + ".w3.weight"]
            a, b = W1 @ x[t], W3 @ x[t]
            u = _np_silu(a) * b
            hh = W2 @ u
            yn[t] += w[t] * s[t] * hh
            g = dy[t] @ hh
            oh = np.zeros(E)
            oh[e] = 1.0
            dz[t] += g * w[t] * (oh - p[t])
            dh = (w[t] * s[t] if scaled else w[t]) * dy[t]
            du = W2.T @ dh
            sig = 1.0 / (1.0 + np.exp(-a))
            da = du * b * (sig * (1 + a * (1 - sig)))
            db = du * _np_silu(a)
            for nm, val in ((".w2.weight", np.outer(dh, u)), (".w1.weight", np.outer(da, x[t])),
                            (".w3.weight", np.outer(db, x[t]))):
                dW[q + nm] = dW.get(q + nm, 0) + val
            dx[t] += W1.T @ da + W3.T @ db
    dx += dz @ Wg
    dW[pre + ".gate.weight"] = dz.T @ x
    worst = 0.0

    def cmp(a, b, what):
        nonlocal worst
        err = np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b)))
        worst = max(worst, err)
        if err > 1e-10:
            raise AssertionError(f"sparsemixer layer check ({what}, scaled={scaled}) rel={err}")

    cmp(y.detach().numpy(), yn, "y")
    cmp(xt.grad.numpy(), dx, "dx")
    for k, v in dW.items():
        cmp(P[k].grad.numpy(), v, k)
    cmp(r["experts"].numpy(), np.stack([D1, D2], 1), "experts")
    return worst, r


def attention_loop_check(cfg, params):
    """Layer-0 attention recomputed with explicit numpy loops straight from the README
    formulas (RoPE pairing i <-> i+HS/2, GQA map, window 0 <= i-j < W_eff)."""
    rng = np.random.default_rng(9)
    H, NH, KVH = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    HS = H // NH
    x = rng.standard_normal((B, T, H))
    pre = "model.layers.0.self_attn"
    pf = {k: v.astype(np.float64) for k, v in params.items()}

    def lin(nm, v):
        y = pf[f"{pre}.{nm}.weight"] @ v
        bb = pf.get(f"{pre}.{nm}.bias")
        return y if bb is None else y + bb

    W = M.window_eff(cfg)
    out = np.zeros((B, T, H))
    for b in range(B):
        q = np.stack([lin("q_proj", x[b, t]) for t in range(T)]).reshape(T, NH, HS)
        k = np.stack([lin("k_proj", x[b, t]) for t in range(T)]).reshape(T, KVH, HS)
        v = np.stack([lin("v_proj", x[b, t]) for t in range(T)]).reshape(T, KVH, HS)
        for arr in (q, k):
            for t in range(T):
                for hh in range(arr.shape[1]):
                    r = arr[t, hh].copy()
                    for i in range(HS // 2):
                        th = t * cfg["rope_theta"] ** (-2.0 * i / HS)
                        arr[t, hh, i] = r[i] * math.cos(th) - r[i + HS // 2] * math.sin(th)
                        arr[t, hh, i + HS // 2] = r[i + HS // 2] * math.cos(th) + r[i] * math.sin(th)
        o = np.zeros((T, NH, HS))
        for hh in range(NH):
            kv = hh // (NH // KVH)
            for i in range(T):
                js = [j for j in range(T) if 0 <= i - j and (W is None or i - j < W)]
                sc = np.array([q[i, hh] @ k[j, kv] / math.sqrt(HS) for j in js])
                a = np.exp(sc - sc.max())
                a /= a.sum()
                o[i, hh] = sum(a[n] * v[j, kv] for n, j in enumerate(js))
        for t in range(T):
            out[b, t] = lin("o_proj", o[t].reshape(-1))
    with torch.no_grad():
        ref = M.attention(to_torch(params), pre, torch.tensor(x), cfg).numpy()
    err = np.max(np.abs(ref - out)) / np.max(np.abs(out))
    if err > 1e-12:
        raise AssertionError(f"attention loop check rel={err}")
    return err


def dense_equivalence_check():
    """E=1, k=1 MoE (mixtral routing) equals a dense SwiGLU MLP, values and grads."""
    cfg = dict(MIXTRAL, num_local_experts=1, num_experts_per_tok=1)
    rng = np.random.default_rng(3)
    params = M.init_params(cfg, rng)
    P = to_torch(params, True)
    x = torch.tensor(rng.standard_normal((B * T, cfg["hidden_size"])), requires_grad=True)
    dy = torch.tensor(rng.standard_normal((B * T, cfg["hidden_size"])))
    pre = "model.layers.0.block_sparse_moe"
    y, _ = M.moe_layer(P, pre, x, cfg, {"router": "mixtral", "mode": "train"})
    y.backward(dy)
    g_moe = x.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    q = pre + ".experts.0"
    w1, w2, w3 = (P[q + n].detach() for n in (".w1.weight", ".w2.weight", ".w3.weight"))
    yd = (F.silu(x2 @ w1.t()) * (x2 @ w3.t())) @ w2.t()
    yd.backward(dy)
    e1 = float((y - yd).abs().max())
    e2 = float((g_moe - x2.grad).abs().max())
    gate_g = float(P[pre + ".gate.weight"].grad.abs().max())
    if e1 > 1e-13 or e2 > 1e-12 or gate_g > 1e-12:
        raise AssertionError(f"E=1,k=1 != dense SwiGLU: dy={e1} dx={e2} gate grad={gate_g}")
    return max(e1, e2)


# ----------------------------------------------------------------------------


def produce(name, cfg, c, check=True):
    params, ids, tg, draws = build_inputs(cfg, c)
    train = c["mode"] == "train"
    D = draws_torch(draws) if (train and c["router"] == "sparsemixer_v2") else None
    P = to_torch(params, requires_grad=train)
    logits, routes, total, comp = run(P, ids, tg, cfg, c, D)
    if train:
        total.backward()
    L = cfg["num_hidden_layers"]
    k = cfg["num_experts_per_tok"]
    out = {}
    out.update(params)
    out["input_ids"] = ids
    out["targets"] = tg
    if D is not None:
        out.update({kk: (v.astype(np.float64) if "gumbel" in kk else v.astype(np.int32))
                    for kk, v in draws.items()})
    out["logits"] = logits.detach().numpy()
    notes = {}
    if train:
        out["loss"] = np.array([float(total)])
        for kk, v in comp.items():
            out[kk] = np.array([float(v)])
        for pn in params:
            out["grad." + pn] = P[pn].grad.numpy().copy()
    for l, r in enumerate(routes):
        out[f"route.experts.L{l}"] = r["experts"].numpy().astype(np.int32)
        out[f"route.weights.L{l}"] = r["w_out"].detach().numpy().astype(np.float64)
        out[f"route.logits.L{l}"] = r["z"].detach().numpy()
        if "scale" in r and train:
            out[f"route.scale.L{l}"] = r["scale"].numpy()
        if "keep" in r:
            out[f"route.kept.L{l}"] = r["keep"].numpy().astype(np.int32)
            notes[f"dropped.L{l}"] = int((~r["keep"]).sum())
            notes["capacity"] = r["capacity"]
        if "n_avail" in r:
            na = r["n_avail"].numpy()
            notes[f"n_avail_hist.L{l}"] = np.bincount(na.reshape(-1), minlength=5).tolist()
            if train:
                notes[f"s_third.L{l}"] = int((r["scale"].numpy() < 1).sum())
    assert out["route.experts.L0"].shape == (B * T, k)
    notes["min_margin"] = min(r["margin"] for r in routes)
    if notes["min_margin"] < MIN_MARGIN:
        raise AssertionError(f"{name}: a routing decision is within {notes['min_margin']:.2e} of a tie")

    checks = {}
    if check and train:
        if c["router"] == "sparsemixer_v2":
            ds = ["lm_head.weight", "lm_head.bias", "model.norm.weight", "model.norm.bias"]
            if c["scale_expert_grad"]:
                # last layer's experts are downstream of every router: true gradient
                ds += [f"model.layers.{L - 1}.block_sparse_moe.experts.{e}.w{j}.weight"
                       for e in range(2) for j in (1, 2, 3)]
            grads = {pn: P[pn].grad.numpy() for pn in ds}
            checks["fd_rel"] = fd_check(name, cfg, c, params, ids, tg, D, grads, ds)
            for l in range(L):
                w, _ = sparsemixer_layer_check(cfg, c, params, draws, l, c["scale_expert_grad"])
                checks[f"layer_formula_rel.L{l}"] = w
        else:
            ds = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                  "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                  "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                  "model.layers.0.post_attention_layernorm.weight",
                  "model.layers.0.block_sparse_moe.gate.weight",
                  "model.layers.1.block_sparse_moe.gate.weight",
                  "model.layers.1.block_sparse_moe.experts.1.w1.weight",
                  "model.layers.1.block_sparse_moe.experts.2.w2.weight",
                  "model.layers.0.block_sparse_moe.experts.3.w3.weight",
                  "model.norm.weight", "lm_head.weight"]
            grads = {pn: P[pn].grad.numpy() for pn in ds}
            checks["fd_rel"] = fd_check(name, cfg, c, params, ids, tg, D, grads, ds)
    if check and not train:
        ds = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.bias",
              "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.bias",
              "model.layers.0.self_attn.o_proj.bias", "model.layers.0.block_sparse_moe.gate.weight",
              "model.layers.1.block_sparse_moe.gate.weight",
              "model.layers.0.block_sparse_moe.experts.0.w1.weight",
              "model.layers.1.block_sparse_moe.experts.1.w2.weight",
              "model.layers.1.post_attention_layernorm.bias", "lm_head.bias"]
        checks["eval_fd_rel"] = fd_check_eval(cfg, c, params, ids, ds)
    if check:
        checks["attn_loop_rel"] = attention_loop_check(cfg, params)
    if check and M.window_eff(cfg) is not None:
        c2 = dict(cfg, sliding_window=None)
        with torch.no_grad():
            lg2, _ = M.forward(to_torch(params), torch.tensor(ids, dtype=torch.long), c2, c, D)
        diff = float((lg2 - logits.detach()).abs().max())
        if not diff > 1e-6:
            raise AssertionError(f"{name}: sliding window does not change the logits")
        checks["window_effect"] = diff

    cfg_meta = dict(cfg)
    cfg_meta["case"] = c
    meta = {"config": json.dumps(cfg_meta, sort_keys=True),
            "format": "moe-ts golden v1; see tools/reference/README.md"}
    return out, meta, notes, checks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "test", "golden"))
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    out_dir = os.path.normpath(args.out)
    print(f"dense equivalence (E=1,k=1): max abs err {dense_equivalence_check():.2e}")
    results = []
    for name, cfg, c in CASES:
        out, meta, notes, checks = produce(name, cfg, c)
        results.append((name, out, meta))
        cs = " ".join(f"{k}={v:.1e}" for k, v in checks.items())
        print(f"{name}: {cs} {json.dumps(notes)}")
        if name == "mixtral_tiny_capacity" and sum(v for k, v in notes.items() if k.startswith("dropped")) == 0:
            raise AssertionError("capacity case drops nothing")
        if name.startswith("phimoe_tiny_train"):
            for l in range(cfg["num_hidden_layers"]):
                h = notes[f"n_avail_hist.L{l}"]
                if h[1] == 0 or sum(h[2:]) == 0 or notes[f"s_third.L{l}"] == 0:
                    raise AssertionError(f"{name}: sparsemixer draws do not exercise all branches: {notes}")
    if args.check_only:
        return
    os.makedirs(out_dir, exist_ok=True)
    for name, out, meta in results:
        path = os.path.join(out_dir, name + ".safetensors")
        st.save_file(out, path, meta)
        back, bmeta = st.load_file(path)
        assert bmeta == meta and set(back) == set(out)
        for kk in out:
            a = np.asarray(out[kk])
            assert back[kk].shape == a.shape and back[kk].dtype.itemsize == a.dtype.itemsize, kk
            assert np.array_equal(back[kk], a), kk
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
