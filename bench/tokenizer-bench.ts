// Tokenizer benchmark: BPE training time on Moby Dick (1.2 MB) to a 4096 vocab, then encode
// throughput (MB/s of UTF-8 input) of our encoder vs @huggingface/tokenizers (tokenizers.js) on the
// same tokenizer.json, side by side in this process, cold (empty word cache) and warm.
// Not: a correctness test (test/tokenizer.test.ts compares ids); it checks equality once and stops.
// Run: npx tsc -p . && node dist/bench/tokenizer-bench.js
import { readFileSync } from "node:fs";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { trainBpe } from "../src/data/bpe-train.js";
import { tokenizerFromJSON } from "../src/data/tokenizer.js";
import { mobyDickFiles } from "../src/data/corpus.js";

const texts = mobyDickFiles().map((f) => readFileSync(f, "utf8"));
const all = texts.join("<|endoftext|>");
const mb = Buffer.byteLength(all) / 1e6;

let t0 = performance.now();
const tok = trainBpe(texts, { vocabSize: 4096 });
const trainS = (performance.now() - t0) / 1000;
console.log(`train  moby-dick ${mb.toFixed(2)} MB → vocab ${tok.vocabSize}: ${trainS.toFixed(2)} s`);

const json = tok.toJSON() as object;
const time = (f: () => number[]): [number, number[]] => {
  const t = performance.now();
  const ids = f();
  return [(performance.now() - t) / 1000, ids];
};
const cold = tokenizerFromJSON(json);
const [oursCold, ids] = time(() => cold.encode(all));
const [oursWarm] = time(() => cold.encode(all));
const hf = new HfTokenizer(json, {});
const [hfS, hfIds] = time(() => hf.encode(all, { add_special_tokens: false }).ids);
const [hfWarm] = time(() => hf.encode(all, { add_special_tokens: false }).ids);
if (ids.length !== hfIds.length || ids.some((v, i) => v !== hfIds[i])) throw new Error("ids differ from tokenizers.js");
const [decS, text] = (() => {
  const t = performance.now();
  const s = cold.decode(ids);
  return [(performance.now() - t) / 1000, s] as const;
})();
if (text !== all) throw new Error("decode(encode(text)) != text");
console.log(`encode ours   ${(mb / oursCold).toFixed(2)} MB/s cold, ${(mb / oursWarm).toFixed(2)} MB/s warm (${ids.length} tokens, ${(Buffer.byteLength(all) / ids.length).toFixed(2)} bytes/token)`);
console.log(`encode tokenizers.js ${(mb / hfS).toFixed(2)} MB/s first, ${(mb / hfWarm).toFixed(2)} MB/s second  → ours/theirs ${(hfWarm / oursWarm).toFixed(1)}× warm`);
console.log(`decode ours   ${(mb / decS).toFixed(1)} MB/s`);
