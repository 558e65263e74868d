#!/usr/bin/env node
// The `moe` executable: runs the compiled CLI (built by `npm install` / `npm run build`).
import("../dist/src/cli/main.js").catch((err) => {
  console.error(`moe: cannot start the CLI (${err instanceof Error ? err.message : String(err)}); run \`npm install\` or \`npm run build\` first`);
  process.exit(1);
});
