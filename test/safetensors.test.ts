// safetensors reader/writer: round trips of every dtype, sharding, and refusal of corrupt files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { SafetensorsFile, SafetensorsCheckpoint, writeSafetensors, writeCheckpointTensors, INDEX_FILE, type TensorToWrite } from "../src/io/safetensors.js";

function tmp(): string {
  return mkdtempSync(path.join(tmpdir(), "moe-st-"));
}

/** Builds a file by hand (independently of the writer) from a header object and data bytes. */
function handMade(header: unknown, data: Uint8Array, lenOverride?: bigint): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

test("round trip of every dtype, bytes exact", () => {
  const dir = tmp();
  const file = path.join(dir, "a.safetensors");
  const t: Record<string, TensorToWrite> = {
    f64: { dtype: "F64", shape: [2, 3], data: Float64Array.from([1, -2, 3.5, Math.PI, -0, 1e300]) },
    f32: { dtype: "F32", shape: [3], data: Float32Array.from([1.5, NaN, -Infinity]) },
    f16: { dtype: "F16", shape: [2], data: Uint16Array.from([0x3c00, 0xfbff]) },
    bf16: { dtype: "BF16", shape: [2], data: Uint16Array.from([0x3f80, 0x7fc0]) },
    e4m3: { dtype: "F8_E4M3", shape: [4], data: Uint8Array.from([0, 0x7e, 0x7f, 0x80]) },
    e5m2: { dtype: "F8_E5M2", shape: [1, 2], data: Uint8Array.from([0x7b, 0x7c]) },
    i8: { dtype: "I8", shape: [2], data: Int8Array.from([-128, 127]) },
    i32: { dtype: "I32", shape: [2], data: Int32Array.from([-1, 2147483647]) },
    i64: { dtype: "I64", shape: [1], data: BigInt64Array.from([-(2n ** 62n)]) },
    u8: { dtype: "U8", shape: [3], data: Uint8Array.from([0, 128, 255]) },
    empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    scalar: { dtype: "F32", shape: [], data: Float32Array.from([7]) },
  };
  writeSafetensors(file, t, { note: "hi" });
  const f = SafetensorsFile.open(file);
  assert.deepEqual(f.metadata, { note: "hi" });
  assert.equal(f.tensors.size, Object.keys(t).length);
  for (const [name, src] of Object.entries(t)) {
    const { info, data } = f.read(name);
    assert.equal(info.dtype, src.dtype, name);
    assert.deepEqual(info.shape, src.shape, name);
    assert.deepEqual(
      Buffer.from(data.buffer, data.byteOffset, data.byteLength),
      Buffer.from(src.data.buffer, src.data.byteOffset, src.data.byteLength),
      name,
    );
  }
  // header is 8-byte aligned and data starts right after it
  const raw = readFileSync(file);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  assert.equal(raw.length, 8 + n + Object.values(t).reduce((s, x) => s + x.data.byteLength, 0));
});

test("reads a hand-made file (independent of our writer) and reads lazily by offset", () => {
  const dir = tmp();
  const file = path.join(dir, "h.safetensors");
  const a = Float32Array.from([1, 2, 3, 4]);
  const b = Int32Array.from([9, 8]);
  const data = new Uint8Array(24);
  data.set(new Uint8Array(b.buffer), 0);
  data.set(new Uint8Array(a.buffer), 8);
  writeFileSync(file, handMade({ b: { dtype: "I32", shape: [2], data_offsets: [0, 8] }, a: { dtype: "F32", shape: [2, 2], data_offsets: [8, 24] } }, data));
  const f = SafetensorsFile.open(file);
  assert.deepEqual([...(f.read("a").data as Float32Array)], [1, 2, 3, 4]);
  assert.deepEqual([...(f.read("b").data as Int32Array)], [9, 8]);
  assert.throws(() => f.read("c"), /no tensor 'c'/);
});

test("corrupt and truncated files are refused with the file and tensor named", () => {
  const dir = tmp();
  const cases: [string, Buffer, RegExp][] = [
    ["short", Buffer.alloc(5), /truncated/],
    ["hugelen", handMade({}, new Uint8Array(0), 1n << 40n), /bad header length/],
    ["lenpast", handMade({}, new Uint8Array(0), 1000n), /bad header length 1000/],
    ["badjson", Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from("{abc ")]), /not valid JSON/],
    ["notobj", handMade([1, 2], new Uint8Array(0)), /not a JSON object/],
    ["dtype", handMade({ w: { dtype: "F31", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /tensor 'w': unknown dtype "F31"/],
    ["past", handMade({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)), /tensor 'w'.*past the end/],
    ["size", handMade({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /tensor 'w': 8 bytes .* needs 12/],
    ["overlap", handMade({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)), /'a' and 'b' have overlapping/],
    ["shape", handMade({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /tensor 'w': shape/],
    ["meta", handMade({ __metadata__: { k: 1 } }, new Uint8Array(0)), /__metadata__.k must be a string/],
  ];
  for (const [name, bytes, re] of cases) {
    const file = path.join(dir, `${name}.safetensors`);
    writeFileSync(file, bytes);
    assert.throws(() => SafetensorsFile.open(file), (e: Error) => e.name === "SafetensorsError" && re.test(e.message) && e.message.includes(file), name);
  }
});

test("writer refuses data whose size does not match dtype × shape, leaving no file", () => {
  const dir = tmp();
  const file = path.join(dir, "bad.safetensors");
  assert.throws(() => writeSafetensors(file, { w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }), /tensor 'w': 8 bytes of data but F32 × \[3\] needs 12/);
  assert.equal(existsSync(file), false);
  assert.deepEqual(readdirSync(dir), []);
});

test("sharded checkpoint: index written, every tensor found in its shard, round trip exact", () => {
  const dir = tmp();
  const tensors: Record<string, TensorToWrite> = {};
  for (let i = 0; i < 7; i++) tensors[`layer.${i}.w`] = { dtype: "F32", shape: [10], data: Float32Array.from({ length: 10 }, (_, j) => i * 100 + j) };
  const files = writeCheckpointTensors(dir, tensors, 100); // 40 bytes each → 2 per shard
  assert.equal(files.at(-1), INDEX_FILE);
  assert.equal(files.length, 5); // 4 shards + index
  const idx = JSON.parse(readFileSync(path.join(dir, INDEX_FILE), "utf8"));
  assert.equal(idx.metadata.total_size, 280);
  const ck = SafetensorsCheckpoint.open(dir);
  assert.equal(ck.names().length, 7);
  for (const [n, t] of Object.entries(tensors)) assert.deepEqual([...(ck.read(n).data as Float32Array)], [...(t.data as Float32Array)]);
  // an index that names a tensor its shard lacks is refused
  idx.weight_map["ghost"] = files[0];
  writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify(idx));
  assert.throws(() => SafetensorsCheckpoint.open(dir), /tensor 'ghost' is mapped to model-00001-of-00004.safetensors, which does not contain it/);
});

test("single-file checkpoint below the shard limit; missing directory content is an error", () => {
  const dir = tmp();
  assert.throws(() => SafetensorsCheckpoint.open(dir), /no model.safetensors or model.safetensors.index.json/);
  writeCheckpointTensors(dir, { a: { dtype: "F32", shape: [1], data: Float32Array.from([3]) } });
  const ck = SafetensorsCheckpoint.open(dir);
  assert.deepEqual(ck.names(), ["a"]);
  assert.deepEqual([...(ck.read("a").data as Float32Array)], [3]);
});
