// A one-line progress bar on stderr (TTY), or plain log lines every N steps (no TTY).
// Not: a logger. Callers print their own messages with `line`.

export interface ProgressFields {
  step: number;
  total: number;
  /** Ordered label → formatted value pairs shown after the bar. */
  fields: [string, string][];
  /** Step at which timing started (a resumed run starts past 0). */
  start: number;
  /** Seconds since `start`, for the ETA. */
  elapsed: number;
}

export class Progress {
  private readonly tty: boolean;
  private drawn = false;

  constructor(private readonly enabled: boolean, private readonly every: number, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(stream.isTTY);
  }

  update(p: ProgressFields): void {
    if (!this.enabled) return;
    const frac = Math.min(1, p.step / p.total);
    const done = p.step - p.start;
    const eta = done > 0 ? (p.elapsed / done) * (p.total - p.step) : NaN;
    const text = p.fields.map(([k, v]) => `${k} ${v}`).join("  ");
    if (this.tty) {
      const width = 24, fill = Math.round(frac * width);
      const bar = "█".repeat(fill) + "░".repeat(width - fill);
      const line = `${String(p.step).padStart(String(p.total).length)}/${p.total} ${bar} ${text}  ETA ${formatDuration(eta)}`;
      const cols = this.stream.columns ?? 160;
      this.stream.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
      this.drawn = true;
    } else if (p.step % this.every === 0 || p.step === p.total) {
      this.stream.write(`step ${p.step}/${p.total}  ${text}  eta ${formatDuration(eta)}\n`);
    }
  }

  /** Prints a full line without breaking the bar. */
  line(s: string): void {
    if (this.drawn && this.tty) this.stream.write("\r\x1b[K");
    process.stdout.write(s + "\n");
  }

  done(): void {
    if (this.drawn && this.tty) this.stream.write("\n");
    this.drawn = false;
  }
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  s = Math.round(s);
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h > 0 ? `${h}h${String(m % 60).padStart(2, "0")}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

export function formatCount(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(Math.round(n));
}
