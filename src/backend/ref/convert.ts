// STUB: replaced by the convert area implementation.
import type { ConvertKernels } from "../spec.js";
export const refConvert = {} as ConvertKernels;

