// Builds the native compute engine (native/*.cc) with node-gyp.
// - Passes --nodedir explicitly (the headers next to the running node), so the build works offline.
// - Links OpenBLAS when pkg-config finds it, unless MOE_BLAS=0; otherwise only the built-in GEMM is compiled.
// Not: a downloader. It never fetches headers or prebuilt binaries.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

function nodeDir() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(process.execPath, "..", "..")].filter(Boolean);
  for (const dir of candidates) {
    if (existsSync(path.join(dir, "include", "node", "node_api.h"))) return dir;
  }
  throw new Error(
    `moe-ts: cannot find Node headers (include/node/node_api.h) under ${candidates.join(" or ")}; ` +
      `set npm_config_nodedir to a directory that has them`,
  );
}

function haveOpenBlas() {
  if (process.env.MOE_BLAS === "0") return false;
  const r = spawnSync("pkg-config", ["--exists", "openblas"]);
  return r.status === 0;
}

const gyp = require.resolve("node-gyp/bin/node-gyp.js");

// The MPI binding (native/mpi, its own gyp project): built only when Open MPI's compiler wrapper
// (`mpicc --showme`) or pkg-config's ompi-c answers, unless MOE_MPI=0. Its absence or a failed
// build is a message, never a failed install: the `threads` backend needs nothing.
function mpiFlags() {
  if (process.env.MOE_MPI === "0") return null;
  const show = (what) => spawnSync("mpicc", [`--showme:${what}`], { encoding: "utf8" });
  const c = show("compile"), l = show("link");
  if (c.status === 0 && l.status === 0) return { cflags: c.stdout.trim(), libs: l.stdout.trim() };
  const pc = (what) => spawnSync("pkg-config", [what, "ompi-c"], { encoding: "utf8" });
  const pcC = pc("--cflags"), pcL = pc("--libs");
  if (pcC.status === 0 && pcL.status === 0) return { cflags: pcC.stdout.trim(), libs: pcL.stdout.trim() };
  return null;
}
{
  const mpiDir = path.join(root, "native", "mpi");
  const flags = mpiFlags();
  const mh = createHash("sha256");
  for (const f of readdirSync(mpiDir).filter((f) => f.endsWith(".cc") || f.endsWith(".gyp")).sort()) mh.update(f).update(readFileSync(path.join(mpiDir, f)));
  mh.update(JSON.stringify({ flags, abi: process.versions.modules, arch: process.arch }));
  const mstamp = mh.digest("hex"), mstampFile = path.join(mpiDir, "build", "moe-mpi-stamp.json");
  const maddon = path.join(mpiDir, "build", "Release", "moe_mpi.node");
  if (!flags) {
    console.log("moe-ts: Open MPI not found (mpicc / pkg-config ompi-c); the mpi backend is not built, the threads backend works without it");
  } else if (!process.argv.includes("--force") && existsSync(maddon) && existsSync(mstampFile) && readFileSync(mstampFile, "utf8").trim() === mstamp) {
    console.log("moe-ts: MPI binding up to date");
  } else {
    console.log("moe-ts: building the MPI binding (native/mpi)");
    const r = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${nodeDir()}`], {
      cwd: mpiDir, stdio: "inherit", env: { ...process.env, MOE_MPI_CFLAGS: flags.cflags, MOE_MPI_LIBS: flags.libs },
    });
    if (r.status === 0) writeFileSync(mstampFile, mstamp + "\n");
    else console.error("moe-ts: the MPI binding failed to build (see above); the mpi backend is unavailable, everything else works");
  }
}
const blas = haveOpenBlas();

// Skip the rebuild when nothing that shapes the binary changed (sources, build files, BLAS choice,
// Node ABI). `npx moe` installs this package into npx's cache, which re-runs this script.
const stampFile = path.join(root, "build", "moe-build-stamp.json");
const addon = path.join(root, "build", "Release", "moe_native.node");
const h = createHash("sha256");
for (const f of readdirSync(path.join(root, "native"), { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name).sort()) h.update(f).update(readFileSync(path.join(root, "native", f)));
h.update(readFileSync(path.join(root, "binding.gyp"))).update(readFileSync(new URL(import.meta.url)));
h.update(JSON.stringify({ blas, abi: process.versions.modules, arch: process.arch }));
const stamp = h.digest("hex");
if (!process.argv.includes("--force") && existsSync(addon) && existsSync(stampFile) && readFileSync(stampFile, "utf8").trim() === stamp) {
  console.log(`moe-ts: native engine up to date (${blas ? "OpenBLAS + built-in GEMM" : "built-in GEMM only"})`);
  process.exit(0);
}
// The BLAS decision reaches binding.gyp through MOE_BUILD_BLAS (a gyp `<!(...)` expansion), not a
// node-gyp option: under npm, node-gyp also takes options from npm's environment.
const args = [gyp, "rebuild", `--nodedir=${nodeDir()}`];
console.log(`moe-ts: building native engine (${blas ? "OpenBLAS + built-in GEMM" : "built-in GEMM only"})`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env: { ...process.env, MOE_BUILD_BLAS: blas ? "1" : "0" } });
if (r.status !== 0) {
  console.error("moe-ts: native build failed; see the compiler output above");
  process.exit(r.status ?? 1);
}
writeFileSync(stampFile, stamp + "\n");
