// What is wrong with a command's arguments, said before its usage (issue 9: wrong arguments print
// what is wrong, not only the usage). Not: flag parsing (args.ts).

/** "moe generate: expected one MODEL, got none" / "…, got 2: 'a' 'b'". */
export function positionalProblem(cmd: string, want: string, got: readonly string[]): string {
  return `${cmd}: expected one ${want}, got ${got.length ? `${got.length}: ${got.map((p) => `'${p}'`).join(" ")}` : "none"}`;
}
