// Minimal typed flag parsing for the CLI: --key value, --key=value, --flag.
// Unknown flags are errors that name the closest known flag.
import { closest } from "../core/suggest.js";

export interface FlagSpec {
  [name: string]: "string" | "number" | "boolean";
}

export type ParsedFlags<S extends FlagSpec> = {
  [K in keyof S]?: S[K] extends "number" ? number : S[K] extends "boolean" ? boolean : string;
};

export function parseFlags<S extends FlagSpec>(cmd: string, argv: string[], spec: S): { flags: ParsedFlags<S>; positional: string[] } {
  const flags: Record<string, unknown> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const type = spec[name];
    if (type === undefined) {
      const hint = closest(name, Object.keys(spec));
      throw new Error(`${cmd}: unknown option --${name}${hint ? ` (did you mean --${hint}?)` : ""}`);
    }
    if (type === "boolean") {
      if (eq >= 0) throw new Error(`${cmd}: --${name} takes no value`);
      flags[name] = true;
      continue;
    }
    const raw = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (raw === undefined) throw new Error(`${cmd}: --${name} needs a value`);
    if (type === "number") {
      const v = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(v)) throw new Error(`${cmd}: --${name} must be a number, got '${raw}'`);
      flags[name] = v;
    } else flags[name] = raw;
  }
  return { flags: flags as ParsedFlags<S>, positional };
}
