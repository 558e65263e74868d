// The device mesh: the world split into tensor-, data- and pipeline-parallel groups for dense
// layers ([pp, dp, tp], Megatron order: tp fastest, then dp, then pp) and expert-parallel groups
// for MoE layers: the data-parallel replicas of one TP rank refolded as [expDp, ep], ep fastest
// ([pp, expDp, ep, tp]). An expert-parallel group holds the same TP slice (ETP: each expert's
// intermediate columns split over tp) of different experts, so tokens cross it in an all-to-all
// while the TP group keeps its all-reduce (Megatron's EP × ETP). With tp = 1 this is plain EP over
// the data-parallel ranks; Skywork's EDP (the TP group as the expert group) is parallel.edp, not a
// mesh axis. With ep = 1 experts are replicated and reduce over the dp ranks of their TP rank.
// Not: the layout planner (which picks the sizes), nor the code that shards weights.
import type { ProcessGroup } from "./process-group.js";

export interface MeshSizes {
  /** Pipeline stages. Default 1. */
  pp?: number;
  /** Data-parallel replicas. Default world.size / (pp × tp). */
  dp?: number;
  /** Tensor-parallel ranks per replica. Default 1. */
  tp?: number;
  /** Expert-parallel ranks (data-parallel replicas of one TP rank); must divide dp. Default 1. */
  ep?: number;
}

export interface MeshCoord {
  pp: number;
  dp: number;
  tp: number;
  ep: number;
  expDp: number;
}

export interface Mesh {
  world: ProcessGroup;
  sizes: Required<MeshSizes> & { expDp: number };
  /** This rank's position on every axis. */
  coord: MeshCoord;
  tp: ProcessGroup;
  dp: ProcessGroup;
  pp: ProcessGroup;
  /** Ranks that hold different experts (the same TP slice) of the same layer (token all-to-all). */
  ep: ProcessGroup;
  /** Ranks that hold the same experts and TP slice (expert gradients reduce here), size dp / ep. */
  expDp: ProcessGroup;
}

/** Mesh sizes, checked against the world size; throws a message naming the mismatch. */
export function meshSizes(worldSize: number, s: MeshSizes): Required<MeshSizes> & { expDp: number } {
  const pos = (name: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`mesh: ${name} must be a positive integer, got ${v}`);
    return v;
  };
  const pp = pos("pp", s.pp ?? 1), tp = pos("tp", s.tp ?? 1), ep = pos("ep", s.ep ?? 1);
  if (worldSize % (pp * tp) !== 0) throw new RangeError(`mesh: world size ${worldSize} is not a multiple of pp × tp = ${pp * tp}`);
  const dp = pos("dp", s.dp ?? worldSize / (pp * tp));
  if (pp * dp * tp !== worldSize) throw new RangeError(`mesh: pp × dp × tp = ${pp} × ${dp} × ${tp} = ${pp * dp * tp}, but the world has ${worldSize} ranks`);
  if (dp % ep !== 0) throw new RangeError(`mesh: ep = ${ep} must divide dp = ${dp} (expert-parallel groups are data-parallel replicas of one TP rank)`);
  return { pp, dp, tp, ep, expDp: dp / ep };
}

/** This world rank's coordinates (pure; the same formula createMesh uses). */
export function meshCoord(rank: number, s: Required<MeshSizes>): MeshCoord {
  const tp = rank % s.tp, dp = Math.floor(rank / s.tp) % s.dp, pp = Math.floor(rank / (s.tp * s.dp));
  return { pp, dp, tp, ep: dp % s.ep, expDp: Math.floor(dp / s.ep) };
}

/** Collective over world: splits it into the mesh's groups (five splits, in a fixed order). */
export async function createMesh(world: ProcessGroup, sizes: MeshSizes): Promise<Mesh> {
  const s = meshSizes(world.size, sizes);
  const c = meshCoord(world.rank, s);
  const must = (g: ProcessGroup | null, name: string): ProcessGroup => {
    if (!g) throw new Error(`mesh: rank ${world.rank} got no ${name} group`);
    return g;
  };
  const tp = must(await world.split(c.pp * s.dp + c.dp, c.tp), "tp");
  const dp = must(await world.split(c.pp * s.tp + c.tp, c.dp), "dp");
  const pp = must(await world.split(c.dp * s.tp + c.tp, c.pp), "pp");
  const ep = must(await world.split((c.pp * s.expDp + c.expDp) * s.tp + c.tp, c.ep), "ep");
  const expDp = must(await world.split((c.pp * s.ep + c.ep) * s.tp + c.tp, c.expDp), "expDp");
  return { world, sizes: s, coord: c, tp, dp, pp, ep, expDp };
}
