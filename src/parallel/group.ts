// The process-group interface every collective goes through (MPI, worker_threads, or one
// process). Layers receive a group; they never know which transport is behind it.
// Not: a transport. This file only defines the interface and the single-process group.

export interface ProcessGroup {
  readonly rank: number;
  readonly size: number;
  /** In-place element-wise sum over the group's ranks. */
  allreduceSum(x: Float64Array | Float32Array | Int32Array): void;
}

/** One rank: every collective is the identity. */
export function singleProcessGroup(): ProcessGroup {
  return { rank: 0, size: 1, allreduceSum: () => {} };
}
