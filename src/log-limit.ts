/**
 * Bounds on log volume, applied to every log line by a pino hook (src/log.ts):
 *  - every string in a line (the message, fields, error messages; two levels deep) is cut by
 *    truncateText, so one huge control-plane error message is a few hundred bytes, not 50 MB;
 *  - a token bucket per message key (the message text, first 100 characters): LOG_BURST lines at
 *    once, then LOG_REFILL_PER_S a second; lines beyond are dropped and counted, and the next line
 *    of that key that passes carries `suppressed: N`.
 * The clock is injected (tests drive it).
 */
import { MAX_TEXT, truncateText } from './util/truncate.js';

export const LOG_BURST = 20;
export const LOG_REFILL_PER_S = 1;
/** Keys remembered at most (the oldest is forgotten first). */
export const LOG_MAX_KEYS = 1000;

interface Bucket {
  tokens: number;
  atMs: number;
  suppressed: number;
}

export class LogRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  constructor(
    private readonly now: () => number = Date.now,
    private readonly burst = LOG_BURST,
    private readonly refillPerS = LOG_REFILL_PER_S,
  ) {}

  /** null: drop the line; else the number of lines of this key dropped since the last one passed. */
  admit(key: string): number | null {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= LOG_MAX_KEYS) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.burst, atMs: t, suppressed: 0 };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.atMs) / 1000) * this.refillPerS);
      b.atMs = t;
    }
    if (b.tokens < 1) {
      b.suppressed++;
      return null;
    }
    b.tokens -= 1;
    const n = b.suppressed;
    b.suppressed = 0;
    return n;
  }
}

function bound(v: unknown, depth: number): unknown {
  if (typeof v === 'string') return truncateText(v);
  if (depth <= 0 || v === null || typeof v !== 'object') return v;
  if (v instanceof Error) {
    const out: Record<string, unknown> = { type: v.name, message: truncateText(v.message) };
    const code = (v as NodeJS.ErrnoException).code;
    if (code !== undefined) out.code = code;
    if (v.stack) out.stack = truncateText(v.stack, MAX_TEXT * 4);
    return out;
  }
  if (Array.isArray(v))
    return v.length > 100 ? [...v.slice(0, 100).map((x) => bound(x, depth - 1)), `... (${v.length} items)`] : v.map((x) => bound(x, depth - 1));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = bound(x, depth - 1);
  return out;
}

/**
 * The arguments of one pino call, bounded, or null when the line is dropped by the limiter.
 * pino calls look like (msg), (obj, msg, ...args) or (err, msg).
 */
export function limitLogArgs(args: unknown[], limiter: LogRateLimiter): unknown[] | null {
  const first = args[0];
  const msg = typeof first === 'string' ? first : typeof args[1] === 'string' ? args[1] : first instanceof Error ? first.message : '';
  const suppressed = limiter.admit(msg.slice(0, 100));
  if (suppressed === null) return null;
  // An Error first is pino's (err, msg): keep it under `err` once it is a plain object.
  const out = args.map((a, i) => (i === 0 && a instanceof Error ? { err: bound(a, 3) } : bound(a, 3)));
  if (suppressed > 0) {
    if (out[0] !== null && typeof out[0] === 'object' && !Array.isArray(out[0])) out[0] = { ...(out[0] as object), suppressed };
    else out.unshift({ suppressed });
  }
  return out;
}
