// The complete validator table: one check per kernel, shared by every backend.
import type { Kernels } from "../spec.js";
import type { Checks } from "./common.js";
import { checkGemm } from "./gemm.js";
import { checkQuant } from "./quant.js";
import { checkQuantBlocks } from "./quant-blocks.js";
import { checkConvert } from "./convert.js";
import { checkOps } from "./ops.js";
import { checkAttention } from "./attention.js";
import { checkRoute } from "./route.js";
import { checkPagedAttention } from "./paged-attention.js";

export const checkKernels: Checks<Kernels> = {
  ...checkGemm,
  ...checkQuant,
  ...checkQuantBlocks,
  ...checkConvert,
  ...checkOps,
  ...checkAttention,
  ...checkRoute,
  ...checkPagedAttention,
};
