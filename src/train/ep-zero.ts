// ZeRO-1 under expert parallelism with sharded memory (Megatron's distributed optimizer over the
// folded groups): a rank's arena holds the dense parameters and its own experts (parallel/
// expert-parallel.ts ExpertShard). The dense part, identical on every rank, has its AdamW moments
// split over the data-parallel group (all dp ranks); the experts, identical only on the ranks
// that hold the same experts, over the expert-data-parallel group. Each split is ZeRO-1's even
// chunking of the part's elements taken in arena order (zeroRange); after its update a rank's
// pieces are all-gathered over the part's group, so every rank holds its whole (sharded) arena.
//
// Not: the moments' checkpoint format (the trainer gathers them to the whole model's layout).
import type { ProcessGroup } from "../parallel/process-group.js";
import { packRanges, rangesSize, unpackRanges, type EpRanges } from "../parallel/expert-parallel.js";
import type { FArr } from "../nn/dims.js";
import { zeroRange } from "./shard-checkpoint.js";

type Ranges = readonly [number, number][];
type Group = Pick<ProcessGroup, "rank" | "size" | "allgatherSync">;

/** Arena ranges covering elements [plo, phi) of `ranges` taken one after the other. */
function subRanges(ranges: Ranges, plo: number, phi: number): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  for (const [lo, hi] of ranges) {
    const a = Math.max(plo, at), b = Math.min(phi, at + hi - lo);
    if (a < b) out.push([lo + a - at, lo + b - at]);
    at += hi - lo;
  }
  return out;
}

interface Part {
  ranges: Ranges;
  group: Group;
  chunk: number;
  /** This rank's arena ranges of the part. */
  mine: [number, number][];
}

export class EpZero {
  private readonly parts: Part[];
  /** The arena ranges this rank updates, in the order its moments hold them (dense, then experts). */
  readonly ranges: [number, number][];
  /** Elements of this rank's moments. */
  readonly size: number;

  constructor(local: EpRanges, groups: { dp: Group; expDp: Group }) {
    if (local.experts.length !== 1) throw new RangeError("EP ZeRO-1: needs the ranges of a sharded arena (one expert range list, the rank's own)");
    this.parts = ([[local.dense, groups.dp], [local.experts[0]!, groups.expDp]] as const).map(([ranges, group]) => {
      const n = rangesSize(ranges), z = zeroRange(n, group.size, group.rank);
      return { ranges, group, chunk: z.chunk, mine: subRanges(ranges, z.lo, z.hi) };
    });
    this.ranges = this.parts.flatMap((p) => p.mine);
    this.size = rangesSize(this.ranges);
  }

  /** Collective over dp and expDp: every rank's updated pieces of `arena` (local layout) become whole on every rank. */
  gather(arena: FArr): void {
    const Ctor = arena.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
    for (const p of this.parts) {
      const send = new Ctor(p.chunk), recv = new Ctor(p.chunk * p.group.size);
      packRanges(arena, p.mine, send);
      p.group.allgatherSync(send, recv);
      unpackRanges(arena, p.ranges, recv);
    }
  }

  /** A local-layout arena (e.g. a moment) from this rank's state `piece`, made whole by gather (collective). */
  expand(piece: FArr, localSize: number): Float32Array {
    const arena = new Float32Array(localSize);
    unpackRanges(arena, this.ranges, piece);
    this.gather(arena);
    return arena;
  }

  /** This rank's state from a whole local-layout arena. */
  pick(arena: FArr, piece: FArr): void {
    packRanges(arena, this.ranges, piece);
  }
}
