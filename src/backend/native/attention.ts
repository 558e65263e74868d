// Native attention: thin wrappers over the addon's flash-style kernels (native/attention.cc).
// Not: validation (checks/attention.ts runs first) or computation.
import type { AttentionKernels } from "../spec.js";
import { resolveAttention } from "../checks/attention.js";
import type { Addon, EngineHandle } from "./addon.js";

export function nativeAttention(a: Addon, e: EngineHandle): AttentionKernels {
  return {
    attentionForward(out, lse, q, k, v, p) {
      const d = resolveAttention("attentionForward", p);
      a.attentionForward!(e, out, lse, q, k, v, d.B, d.T, d.Tk, d.NH, d.KVH, d.HS, d.window, d.scale);
    },
    attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, p) {
      const d = resolveAttention("attentionBackward", p);
      a.attentionBackward!(e, dq, dk, dv, dout, q, k, v, out, lse, d.B, d.T, d.Tk, d.NH, d.KVH, d.HS, d.window, d.scale);
    },
  };
}
