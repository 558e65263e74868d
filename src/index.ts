// moe-ts public API: what a program embedding moe-ts imports. The CLI (`moe`) is built on the same.
export { createBackend, KernelArgError, type Backend, type BackendOptions, type BackendName, type Kernels } from "./backend/index.js";
export { parseHfConfig, resolveConfig, parameterCounts, FAMILIES, ConfigError, type HfConfig, type ModelConfig, type Family } from "./model/config.js";
export { preset, PRESET_NAMES } from "./model/presets.js";
export { MoeModel, initParams, IGNORE_INDEX, type StepOptions, type StepResult } from "./model/model.js";
export { loadHfModel, saveHfModel, readHfConfig } from "./model/checkpoint.js";
export { upcycleParams, expertSimilarity } from "./model/upcycle.js";
export { routerForward, routerBackward, type RouterConfig } from "./moe/router.js";
export { skyworkAuxLoss, switchAuxLoss, globalLoadBalancingLoss, routerZLoss, adaptiveAlphaInit, adaptiveAlphaStep } from "./moe/balance.js";
export { moeForward, moeBackward, type MoeLayerStats } from "./moe/layer.js";
export { loadTokenizer, saveTokenizer } from "./data/tokenizer.js";
export { trainBpe } from "./data/bpe-train.js";
export { loadTrainConfig, defaultTrainConfig, type TrainConfig } from "./train/config.js";
export { Trainer, type StepReport } from "./train/trainer.js";
export { generate } from "./infer/generate.js";
export { SafetensorsFile, SafetensorsCheckpoint, writeSafetensors } from "./io/safetensors.js";
export { singleProcessGroup, type ProcessGroup } from "./parallel/group.js";
// Inference output path: sampling parameters, per-sequence sampler, stop handling, detokenizer, chat templates.
export { validateSamplingParams, defaultSamplingParams, outputBudget, SamplingParamsError, SAMPLING_PARAM_NAMES, type SamplingParams, type SamplingContext } from "./infer/sampling-params.js";
export { SequenceSampler, SamplerWorkspace, SamplerError, type SampledToken, type TokenLogprob } from "./infer/sampler.js";
export { StopMatcher, type FinishReason, type StopStep } from "./infer/stop.js";
export { IncrementalDetokenizer } from "./infer/detok.js";
export { SequenceOutput } from "./infer/output.js";
export { renderChat, ChatTemplate, ChatTemplateError, loadChatTemplate, DEFAULT_CHAT_TEMPLATE, DEFAULT_CHAT_STOP, type ChatMessage } from "./infer/chat.js";
export { KvCachePool, KvCacheError, kvBytesPerToken, type KvCacheOptions, type KvCacheStats, type KvDtype, type SeqId } from "./infer/kv-cache.js";
