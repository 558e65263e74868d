// Argument checks shared by every kernel area. They run in TypeScript before any
// backend computes, so a bad call is a KernelArgError naming the kernel and the
// argument — never a native crash or a silent out-of-bounds read.
import { KernelArgError, type FArr } from "../spec.js";

/** A validator has the kernel's parameters and returns nothing. */
export type Checks<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => unknown ? (...args: A) => void : never;
};

export function fail(kernel: string, msg: string): never {
  throw new KernelArgError(`${kernel}: ${msg}`);
}

function typeName(x: unknown): string {
  if (x === null) return "null";
  if (x === undefined) return "undefined";
  if (ArrayBuffer.isView(x)) return `${x.constructor.name}(${(x as unknown as { length: number }).length})`;
  return typeof x;
}

/** A positive or zero integer dimension. */
export function dim(kernel: string, name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) fail(kernel, `${name} must be a non-negative integer, got ${String(v)}`);
  return v;
}

export function positive(kernel: string, name: string, v: unknown): number {
  dim(kernel, name, v);
  if ((v as number) === 0) fail(kernel, `${name} must be positive, got 0`);
  return v as number;
}

export function finite(kernel: string, name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(kernel, `${name} must be a finite number, got ${String(v)}`);
  return v;
}

/** A float array (Float32Array or Float64Array) of exactly `len` elements. */
export function farr(kernel: string, name: string, x: unknown, len: number): FArr {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) {
    fail(kernel, `${name} must be a Float32Array or Float64Array, got ${typeName(x)}`);
  }
  if (x.length !== len) fail(kernel, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

/** All float arrays of one call share one dtype. */
export function sameDtype(kernel: string, arrays: Record<string, FArr | null | undefined>): void {
  let first: [string, FArr] | undefined;
  for (const [name, a] of Object.entries(arrays)) {
    if (a == null) continue;
    if (!first) first = [name, a];
    else if (a.constructor !== first[1].constructor) {
      fail(kernel, `${name} is ${a.constructor.name} but ${first[0]} is ${first[1].constructor.name}; one call uses one float dtype`);
    }
  }
}

export function f32(kernel: string, name: string, x: unknown, len: number): Float32Array {
  if (!(x instanceof Float32Array)) fail(kernel, `${name} must be a Float32Array, got ${typeName(x)}`);
  if (x.length !== len) fail(kernel, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

export function i32(kernel: string, name: string, x: unknown, len: number): Int32Array {
  if (!(x instanceof Int32Array)) fail(kernel, `${name} must be an Int32Array, got ${typeName(x)}`);
  if (x.length !== len) fail(kernel, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

export function u16(kernel: string, name: string, x: unknown, len: number): Uint16Array {
  if (!(x instanceof Uint16Array)) fail(kernel, `${name} must be a Uint16Array, got ${typeName(x)}`);
  if (x.length !== len) fail(kernel, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

export function u8(kernel: string, name: string, x: unknown, len: number): Uint8Array {
  if (!(x instanceof Uint8Array)) fail(kernel, `${name} must be a Uint8Array, got ${typeName(x)}`);
  if (x.length !== len) fail(kernel, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

/** Every index in [lo, hi); reports the first offender. */
export function indicesInRange(kernel: string, name: string, idx: Int32Array, lo: number, hi: number): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!;
    if (v < lo || v >= hi) fail(kernel, `${name}[${i}] = ${v} is out of range [${lo}, ${hi})`);
  }
}

/** Two arrays must not share memory (unless the kernel allows aliasing). */
export function noAlias(kernel: string, aName: string, a: ArrayBufferView, bName: string, b: ArrayBufferView): void {
  if (a.buffer !== b.buffer) return;
  const a0 = a.byteOffset, a1 = a0 + a.byteLength, b0 = b.byteOffset, b1 = b0 + b.byteLength;
  if (a0 < b1 && b0 < a1) fail(kernel, `${aName} and ${bName} overlap in memory; this kernel does not allow aliasing`);
}

/**
 * Wraps a kernel implementation so every call is validated first. With `f32Only`
 * (the native backend) any Float64Array argument is refused with a clear message.
 */
export function withChecks<T extends object>(impl: T, checks: Checks<T>, f32Only: boolean): T {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(checks) as (keyof T & string)[]) {
    const fn = impl[key] as unknown as (...a: unknown[]) => unknown;
    const check = checks[key] as unknown as (...a: unknown[]) => void;
    if (typeof fn !== "function") throw new Error(`backend is missing kernel ${key}`);
    out[key] = (...args: unknown[]) => {
      if (f32Only) {
        for (let i = 0; i < args.length; i++) {
          if (args[i] instanceof Float64Array) fail(key, `argument #${i + 1} is a Float64Array; the native backend computes in f32 (use the ref backend for f64)`);
        }
      }
      check(...args);
      return fn(...args);
    };
  }
  return out as T;
}
