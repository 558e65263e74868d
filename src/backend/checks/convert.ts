// STUB: replaced by the convert area implementation.
import type { ConvertKernels } from "../spec.js";
import type { Checks } from "./common.js";
export const checkConvert = {} as Checks<ConvertKernels>;

