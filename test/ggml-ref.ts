// ggml's own quantisation code as a test oracle: compiles test/native/ggml-ref.c against the
// libggml-base / libllama that node-llama-cpp ships (its CPU build) and runs it on files.
// Returns null (tests then skip with the reason) when node-llama-cpp's libraries or a C
// compiler are missing. Not a test file itself.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface GgmlRef {
  /** quantize_row_<type>_ref over x (type: q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k bf16). */
  quantize(type: string, x: Float32Array): Uint8Array;
  /** dequantize_row_<type> of n values. */
  dequantize(type: string, bytes: Uint8Array, n: number): Float32Array;
  /** llama_model_quantize(input, output, ftype) without an importance matrix. */
  quantizeModel(input: string, output: string, ftype: number): void;
}

/** The repository root (this file is dist/test/ggml-ref.js or test/ggml-ref.ts). */
function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(d, "package.json"))) {
    const up = path.dirname(d);
    if (up === d) throw new Error("no package.json above the test directory");
    d = up;
  }
  return d;
}

function libDir(root: string): string | null {
  const base = path.join(root, "node_modules", "@node-llama-cpp");
  if (!existsSync(base)) return null;
  for (const pkg of readdirSync(base)) {
    if (!pkg.startsWith(`${process.platform}-${process.arch === "x64" ? "x64" : process.arch}`) || pkg.includes("cuda") || pkg.includes("vulkan")) continue;
    const bins = path.join(base, pkg, "bins");
    if (!existsSync(bins)) continue;
    for (const d of readdirSync(bins)) {
      const dir = path.join(bins, d);
      if (existsSync(path.join(dir, "libggml-base.so"))) return dir;
    }
  }
  return null;
}

/** Builds the harness once per process (in a temp dir); null with a reason when it cannot. */
export function loadGgmlRef(): { ref: GgmlRef | null; reason: string } {
  const root = repoRoot();
  const dir = libDir(root);
  if (!dir) return { ref: null, reason: "node-llama-cpp's CPU libraries (libggml-base.so) are not installed" };
  const llama = readdirSync(dir).find((f) => /^libllama(\.v[\d.]+)?\.so$/.test(f));
  if (!llama) return { ref: null, reason: `no libllama*.so in ${dir}` };
  const src = path.join(root, "test", "native", "ggml-ref.c");
  const work = path.join(os.tmpdir(), `moe-ts-ggml-ref-${process.getuid?.() ?? 0}`);
  mkdirSync(work, { recursive: true });
  const exe = path.join(work, `ggml-ref-${Math.floor(statSync(src).mtimeMs)}-${statSync(path.join(dir, "libggml-base.so")).size}`);
  if (!existsSync(exe)) {
    const tmpExe = `${exe}.${process.pid}`;
    try {
      execFileSync("cc", ["-O1", "-o", tmpExe, src, `-L${dir}`, "-l:libggml-base.so", `-l:${llama}`, `-Wl,-rpath,${dir}`], { stdio: "pipe" });
      execFileSync("mv", [tmpExe, exe]);
    } catch (e) {
      return { ref: null, reason: `cannot build test/native/ggml-ref.c: ${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).slice(0, 300)}` };
    }
  }
  const run = (args: string[]) => execFileSync(exe, args, { stdio: ["ignore", "ignore", "pipe"] });
  const scratch = () => mkdtempSync(path.join(work, "run-"));
  const ref: GgmlRef = {
    quantize(type, x) {
      const d = scratch();
      try {
        writeFileSync(path.join(d, "in"), new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
        run(["q", type, String(x.length), path.join(d, "in"), path.join(d, "out")]);
        return new Uint8Array(readFileSync(path.join(d, "out")));
      } finally {
        rmSync(d, { recursive: true, force: true });
      }
    },
    dequantize(type, bytes, n) {
      const d = scratch();
      try {
        writeFileSync(path.join(d, "in"), bytes);
        run(["d", type, String(n), path.join(d, "in"), path.join(d, "out")]);
        const b = readFileSync(path.join(d, "out"));
        return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      } finally {
        rmSync(d, { recursive: true, force: true });
      }
    },
    quantizeModel(input, output, ftype) {
      run(["m", input, output, String(ftype)]);
    },
  };
  return { ref, reason: "" };
}
