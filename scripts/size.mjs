// `npm run size`: lines of code per module and per file (like tinygrad's sz.py), so new
// features stay within the budgets of ../shared/docs/style.md (split a file before ~800 lines).
// Counts non-blank, non-comment-only lines of src/ (TypeScript) and native/ (C++).
// Usage: node scripts/size.mjs [--json] [--max 800]
import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";

const args = process.argv.slice(2);
const json = args.includes("--json");
const maxIdx = args.indexOf("--max");
const MAX = maxIdx >= 0 ? Number(args[maxIdx + 1]) : 800;
if (!(MAX > 0)) throw new Error(`--max must be a positive number`);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

function* walk(dir) {
  for (const e of readdirSync(dir)) {
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (/\.(ts|cc|h|mjs)$/.test(e)) yield p;
  }
}

function count(file) {
  let code = 0, lines = 0, inBlock = false;
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    lines++;
    const l = raw.trim();
    if (inBlock) {
      if (l.includes("*/")) inBlock = false;
      continue;
    }
    if (l === "" || l.startsWith("//")) continue;
    if (l.startsWith("/*")) {
      if (!l.includes("*/")) inBlock = true;
      continue;
    }
    code++;
  }
  return { code, lines };
}

const files = [];
for (const top of ["src", "native"]) for (const f of walk(path.join(root, top))) files.push({ file: path.relative(root, f), ...count(f) });
const modules = new Map();
for (const f of files) {
  const parts = f.file.split(path.sep);
  const mod = parts[0] === "src" && parts.length > 2 ? `src/${parts[1]}` : parts[0];
  const m = modules.get(mod) ?? { module: mod, files: 0, code: 0, lines: 0 };
  m.files++;
  m.code += f.code;
  m.lines += f.lines;
  modules.set(mod, m);
}
const mods = [...modules.values()].sort((a, b) => b.code - a.code);
const over = files.filter((f) => f.lines > MAX).sort((a, b) => b.lines - a.lines);
const total = files.reduce((s, f) => s + f.code, 0);
if (json) {
  console.log(JSON.stringify({ total, modules: mods, files: files.sort((a, b) => b.code - a.code), over }, null, 2));
} else {
  console.log("module                files   code  lines");
  for (const m of mods) console.log(`${m.module.padEnd(20)} ${String(m.files).padStart(6)} ${String(m.code).padStart(6)} ${String(m.lines).padStart(6)}`);
  console.log(`${"total".padEnd(20)} ${String(files.length).padStart(6)} ${String(total).padStart(6)}`);
  console.log(`\nlargest files:`);
  for (const f of [...files].sort((a, b) => b.lines - a.lines).slice(0, 10)) console.log(`  ${String(f.lines).padStart(5)}  ${f.file}`);
  if (over.length) console.log(`\nover ${MAX} lines (split them): ${over.map((f) => f.file).join(", ")}`);
}
