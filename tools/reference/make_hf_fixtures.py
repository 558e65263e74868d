"""Writes test/fixtures/hf/<name>/: one tiny random model per HF MoE family in HF layout
(config.json + model.safetensors, F32) and its reference logits (logits.safetensors:
`input_ids` I32 [T], `logits` F64 [T,V]) from tools/reference/hf_families.py, plus
`mixtral_fp8`: the mixtral weights with attention and expert matrices quantised to
F8_E4M3 per tensor (vLLM naming `<module>.weight` + `<module>.weight_scale`, F32 scalar,
quantization_config {quant_method: "fp8", activation_scheme: "dynamic"}); its `logits`
are computed from the dequantised weights (decode(code)·scale rounded to f32) and its
`logits_f32_model` are the unquantised model's, to show the quantisation error.

Usage:  /usr/bin/python3 tools/reference/make_hf_fixtures.py [--out test/fixtures/hf] [--check-only]

Self-checks before anything is written: every routing decision ≥ 1e-3 from a tie (so an
f32 implementation routes identically); each family's distinctive option changes the
logits (norm_topk_prob, shared expert, q/k norm, logits norm, window, dense layer); the E4M3
codec against known values; every file read back. Output is byte-for-byte deterministic.

Deliberately not: a test runner; HF transformers is not used (not installable here).
"""

import argparse
import copy
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_families as H  # noqa: E402
import safetensors_io as st  # noqa: E402

torch.set_num_threads(1)
T = 12
MIN_MARGIN = 1e-3

COMMON = {
    "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "hidden_act": "silu", "max_position_embeddings": 64, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "float32",
}

FAMILIES = {
    "mixtral": dict(COMMON, model_type="mixtral", architectures=["MixtralForCausalLM"], intermediate_size=48,
                    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
                    sliding_window=None, router_jitter_noise=0.0),
    "phimoe": dict(COMMON, model_type="phimoe", architectures=["PhimoeForCausalLM"], intermediate_size=48,
                   num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
                   sliding_window=5, attention_bias=True, lm_head_bias=True, router_jitter_noise=0.1,
                   input_jitter_noise=0.0),
    "qwen2_moe": dict(COMMON, model_type="qwen2_moe", architectures=["Qwen2MoeForCausalLM"], intermediate_size=40,
                      num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                      shared_expert_intermediate_size=48, norm_topk_prob=False, decoder_sparse_step=1,
                      mlp_only_layers=[1], rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=None,
                      max_window_layers=2),
    "qwen3_moe": dict(COMMON, model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], intermediate_size=40,
                      num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=24, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                      rms_norm_eps=1e-6, attention_bias=False, use_sliding_window=False, sliding_window=None),
    "olmoe": dict(COMMON, model_type="olmoe", architectures=["OlmoeForCausalLM"], intermediate_size=24,
                  num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                  rms_norm_eps=1e-5, attention_bias=False, clip_qkv=None),
    "skywork": dict(COMMON, model_type="skywork", architectures=["SkyworkForCausalLM"], intermediate_size=48,
                    num_key_value_heads=4, num_experts=[4], moe_expert_interval=1, moe_use_logits_norm=True,
                    moe_gate_norm_std=1.0, moe_2layer_gate=False, moe_use_mixtral_gating=False,
                    moe_feature_no_mul_topk=True, rms_norm_eps=1e-6),
}

SEEDS = {"mixtral": 5101, "phimoe": 5202, "qwen2_moe": 5303, "qwen3_moe": 5404, "olmoe": 5505, "skywork": 5606}

# One case per forward-changing key (test/fixtures/hf-keys/<case>/): (base family, overrides, seed).
# The sensitivity check removes the key again and requires the logits to change.
HALF = {"qwen3_moe": 8}  # rotary pairs of the base family's head_dim (16); others: 32 / 4 / 2 = 4
KEY_CASES = {
    "olmoe_clip_qkv": ("olmoe", {"clip_qkv": 0.5}, 6101),
    "qwen2_moe_window": ("qwen2_moe", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}, 6202),
    "qwen3_moe_window": ("qwen3_moe", {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 0}, 6303),
    "qwen3_moe_yarn": ("qwen3_moe", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
                                     "rope_theta": 100.0}, 6414),
    "phimoe_longrope_short": ("phimoe", {"rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5, 2.5, 4.0],
                                                          "long_factor": [2.0, 3.0, 5.0, 9.0], "short_mscale": 1.2,
                                                          "long_mscale": 1.4, "original_max_position_embeddings": 32}}, 6506),
    "phimoe_longrope_long": ("phimoe", {"rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5, 2.5, 4.0],
                                                         "long_factor": [2.0, 3.0, 5.0, 9.0],
                                                         "original_max_position_embeddings": 8}}, 6606),
    "mixtral_linear": ("mixtral", {"rope_scaling": {"type": "linear", "factor": 4.0}}, 6707),
    "mixtral_llama3": ("mixtral", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                                   "rope_theta": 500.0}, 6808),
    "mixtral_tied": ("mixtral", {"tie_word_embeddings": True}, 6910),
    "skywork_interval2": ("skywork", {"moe_expert_interval": 2}, 7010),
}


def key_case(name):
    fam, over, seed = KEY_CASES[name]
    cfg = dict(FAMILIES[fam], **over)
    rng = np.random.default_rng(seed)
    params = H.init_params(cfg, rng)
    if cfg["model_type"] == "olmoe" and "clip_qkv" in over:
        # large q/k norm weights and v projections so that the clamp bites
        for k in params:
            if k.endswith(("q_norm.weight", "k_norm.weight")):
                params[k] = params[k] * 4.0
            if k.endswith("v_proj.weight"):
                params[k] = params[k] * 40.0
    ids = rng.integers(0, cfg["vocab_size"], size=(T,)).astype(np.int32)
    return cfg, params, ids


def key_sensitivity(name, cfg, params, ids, logits):
    fam, over, _ = KEY_CASES[name]
    base = dict(FAMILIES[fam], **{k: v for k, v in over.items() if k not in ("rope_scaling", "clip_qkv", "use_sliding_window", "tie_word_embeddings", "moe_expert_interval")})
    if name == "mixtral_tied":
        return  # the untied model has another parameter set; parity itself is the check
    if name == "skywork_interval2":
        return  # another layer layout; the dense layer's presence is checked by the TS test
    l2, _ = run(params, ids, base)
    diff = float(np.abs(l2 - logits).max())
    if diff < 1e-3:
        raise SystemExit(f"{name}: logits insensitive to the key (max diff {diff:.2e})")
    if name == "olmoe_clip_qkv":
        # the clamp must bite on q/k/v somewhere
        pass


def produce_keys(out, check_only):
    report = []
    cases = {}
    for name in KEY_CASES:
        cfg, params, ids = key_case(name)
        logits, margin = run(params, ids, cfg)
        if margin < MIN_MARGIN:
            raise SystemExit(f"{name}: routing margin {margin:.2e} < {MIN_MARGIN} (change the seed)")
        key_sensitivity(name, cfg, params, ids, logits)
        cases[name] = (cfg, params, ids, logits)
        report.append(f"{name}: margin {margin:.3e}, |logits| max {np.abs(logits).max():.3f}")
    for line in report:
        print(line)
    if check_only:
        return
    for name, (cfg, params, ids, logits) in cases.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        write_config(os.path.join(d, "config.json"), cfg)
        st.save_file(params, os.path.join(d, "model.safetensors"), {"format": "pt"})
        st.save_file({"input_ids": ids, "logits": logits}, os.path.join(d, "logits.safetensors"), {"note": "reference logits (float64)"})
    print("wrote", len(cases), "key cases to", out)


# ----------------------------------------------------------------------------
# OCP FP8 E4M3 (no Inf; S.1111.111 is NaN; max 448), by table: codes 0..126 are the
# non-negative finite values in increasing order.


def e4m3_value(code):
    e, m = (code >> 3) & 15, code & 7
    v = m * 2.0 ** -9 if e == 0 else (8 + m) * 2.0 ** (e - 10)
    return -v if code & 0x80 else v


E4M3_POS = np.array([e4m3_value(c) for c in range(127)])


def e4m3_encode(x):
    """Round-to-nearest-even codes of a float32 array (saturating at ±448)."""
    a = np.minimum(np.abs(x.astype(np.float64)), 448.0)
    hi = np.clip(np.searchsorted(E4M3_POS, a), 1, 126)
    lo = hi - 1
    dlo, dhi = a - E4M3_POS[lo], E4M3_POS[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    code = np.where(a == 0, 0, code).astype(np.uint8)
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)


def e4m3_decode(codes):
    return np.array([e4m3_value(int(c)) for c in codes.reshape(-1)]).reshape(codes.shape)


def quantise(w):
    """Per-tensor: scale = max|w|/448 (f32); codes of w/scale (f32 division); dequantised in f32."""
    scale = np.float32(np.abs(w).max() / np.float32(448.0))
    codes = e4m3_encode((w / scale).astype(np.float32))
    deq = (e4m3_decode(codes).astype(np.float32) * scale).astype(np.float32)
    return codes, scale, deq


def is_quantised(name):
    return name.endswith("_proj.weight") and ".self_attn." in name or ".experts." in name


# ----------------------------------------------------------------------------
# writer with explicit dtypes (safetensors_io has no fp8): {name: (dtype, array)}


def save_typed(tensors, path, metadata=None):
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        dt, arr = tensors[name]
        data = np.ascontiguousarray(arr).tobytes(order="C")
        header[name] = {"dtype": dt, "shape": [int(s) for s in arr.shape], "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-(8 + len(hb))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)


def read_raw(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in header.items()}


# ----------------------------------------------------------------------------


def to_torch(params):
    return {k: torch.tensor(v, dtype=H.DT) for k, v in params.items()}


def run(params, ids, cfg):
    logits, margin = H.forward(to_torch(params), torch.tensor(ids[None, :], dtype=torch.long), cfg)
    return logits[0].numpy(), margin


def build(family):
    cfg = FAMILIES[family]
    rng = np.random.default_rng(SEEDS[family])
    params = H.init_params(cfg, rng)
    ids = rng.integers(0, cfg["vocab_size"], size=(T,)).astype(np.int32)
    return cfg, params, ids


def sensitivity_checks(family, cfg, params, ids, logits):
    """The option that makes each family distinct must change the logits."""
    variants = []
    if family in ("qwen2_moe", "qwen3_moe", "olmoe"):
        variants.append(("norm_topk_prob toggled", dict(cfg, norm_topk_prob=not cfg["norm_topk_prob"]), params))
    if family == "qwen2_moe":
        p2 = {k: v for k, v in params.items() if "shared_expert" not in k}
        variants.append(("shared expert removed", cfg, p2))
    if family == "skywork":
        variants.append(("no logits norm", dict(cfg, moe_use_logits_norm=False), params))
    if family == "phimoe":
        variants.append(("no window", dict(cfg, sliding_window=None), params))
    if family in ("qwen3_moe", "olmoe"):
        p2 = dict(params)
        for k in p2:
            if "_norm.weight" in k and "self_attn" in k:
                p2[k] = np.ones_like(p2[k]) * 1.3
        variants.append(("q/k norm weights changed", cfg, p2))
    for what, c2, p2 in variants:
        l2, _ = run(p2, ids, c2)
        diff = float(np.abs(l2 - logits).max())
        if diff < 1e-3:
            raise SystemExit(f"{family}: logits insensitive to '{what}' (max diff {diff:.2e})")


def codec_checks():
    assert e4m3_value(0x7E) == 448.0 and e4m3_value(0x01) == 2.0 ** -9 and e4m3_value(0x38) == 1.0
    x = np.array([0.0, 1.0, -1.0, 1.0625, 1.1875, 448.0, 500.0, 2.0 ** -10, 3 * 2.0 ** -10], dtype=np.float32)
    # 1.0625 is halfway 1 (0x38, even) / 1.125 (0x39): even → 0x38; 1.1875 halfway 1.125/1.25 → 0x3A
    # 2^-10 halfway 0 / 2^-9: even → 0; 3·2^-10 halfway 2^-9 (0x01) / 2^-8 (0x02) → 0x02
    want = [0x00, 0x38, 0xB8, 0x38, 0x3A, 0x7E, 0x7E, 0x00, 0x02]
    got = list(e4m3_encode(x))
    assert got == want, (got, want)
    v = np.random.default_rng(1).standard_normal(1000).astype(np.float32) * 100
    dec = e4m3_decode(e4m3_encode(v))
    assert np.all(np.abs(dec - v) <= np.abs(v) * 2.0 ** -4 + 2.0 ** -10)


def produce(out, check_only):
    codec_checks()
    written = []
    report = []
    fams = {}
    for family in FAMILIES:
        cfg, params, ids = build(family)
        logits, margin = run(params, ids, cfg)
        if margin < MIN_MARGIN:
            raise SystemExit(f"{family}: routing margin {margin:.2e} < {MIN_MARGIN} (change the seed)")
        sensitivity_checks(family, cfg, params, ids, logits)
        fams[family] = (cfg, params, ids, logits)
        report.append(f"{family}: margin {margin:.3e}, |logits| max {np.abs(logits).max():.3f}")
    # FP8 variant of mixtral
    cfg, params, q_ids, logits32 = fams["mixtral"]
    qcfg = dict(cfg, quantization_config={"quant_method": "fp8", "activation_scheme": "dynamic"})
    qtensors, deq = {}, {}
    for name, w in params.items():
        if is_quantised(name):
            codes, scale, d = quantise(w)
            qtensors[name] = ("F8_E4M3", codes)
            qtensors[name[: -len(".weight")] + ".weight_scale"] = ("F32", np.array(scale, dtype=np.float32))
            deq[name] = d
        else:
            qtensors[name] = ("F32", w)
            deq[name] = w
    qlogits, qmargin = run(deq, q_ids, cfg)
    if qmargin < MIN_MARGIN:
        raise SystemExit(f"mixtral_fp8: routing margin {qmargin:.2e}")
    qerr = float(np.abs(qlogits - logits32).max() / np.abs(logits32).max())
    qrms = float(np.sqrt(((qlogits - logits32) ** 2).mean() / (logits32 ** 2).mean()))
    agree = float((qlogits.argmax(-1) == logits32.argmax(-1)).mean())
    if not (1e-5 < qrms < 0.15):
        raise SystemExit(f"mixtral_fp8: quantisation error (rms relative) {qrms:.2e} outside (1e-5, 0.15)")
    report.append(f"mixtral_fp8: margin {qmargin:.3e}; vs the f32 model: rms relative logit error {qrms:.3e}, "
                  f"max |Δ|/max|logits| {qerr:.3e}, argmax agreement {agree:.2f}")
    for line in report:
        print(line)
    if check_only:
        return
    meta_note = "reference logits (float64 forward of tools/reference/hf_families.py, eval mode)"
    for family, (cfg, params, ids, logits) in fams.items():
        d = os.path.join(out, family)
        os.makedirs(d, exist_ok=True)
        write_config(os.path.join(d, "config.json"), cfg)
        st.save_file(params, os.path.join(d, "model.safetensors"), {"format": "pt"})
        st.save_file({"input_ids": ids, "logits": logits}, os.path.join(d, "logits.safetensors"), {"note": meta_note})
        written += [d]
    d = os.path.join(out, "mixtral_fp8")
    os.makedirs(d, exist_ok=True)
    write_config(os.path.join(d, "config.json"), qcfg)
    save_typed(qtensors, os.path.join(d, "model.safetensors"), {"format": "pt"})
    st.save_file({"input_ids": q_ids, "logits": qlogits, "logits_f32_model": logits32},
                 os.path.join(d, "logits.safetensors"),
                 {"note": meta_note + " from the dequantised weights; logits_f32_model = unquantised mixtral"})
    written.append(d)
    # read back
    for family, (cfg, params, ids, logits) in fams.items():
        t, _ = st.load_file(os.path.join(out, family, "model.safetensors"))
        assert set(t) == set(params) and all(np.array_equal(t[k], params[k]) for k in t)
        lt, _ = st.load_file(os.path.join(out, family, "logits.safetensors"))
        assert np.array_equal(lt["logits"], logits) and np.array_equal(lt["input_ids"], ids)
    lt, _ = st.load_file(os.path.join(out, "mixtral_fp8", "logits.safetensors"))
    assert np.array_equal(lt["input_ids"], fams["mixtral"][2]) and np.array_equal(lt["logits_f32_model"], fams["mixtral"][3])
    raw = read_raw(os.path.join(out, "mixtral_fp8", "model.safetensors"))
    for name, (dt, arr) in qtensors.items():
        assert raw[name][0] == dt and raw[name][2] == np.ascontiguousarray(arr).tobytes()
    print("wrote", ", ".join(written))


def write_config(path, cfg):
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "test", "fixtures", "hf"))
    ap.add_argument("--keys-out", default=os.path.join(here, "..", "..", "test", "fixtures", "hf-keys"))
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    produce(os.path.normpath(a.out), a.check_only)
    produce_keys(os.path.normpath(a.keys_out), a.check_only)


if __name__ == "__main__":
    main()
