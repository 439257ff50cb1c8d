/**
 * How long the link waits before it tries the control plane again after a failed call.
 *
 * - The connection was refused (ECONNREFUSED): nothing listens on the port, e.g. the control
 *   plane is restarting. Trying again costs the control plane's host one SYN answered by its
 *   kernel (no request is sent or processed), so the link tries every 0.2-0.8 s and delivers
 *   held events within a second of the control plane answering again.
 * - Any other failure (an answer with an error, a timeout, a reset, an unreachable host): the
 *   server may be overloaded or the network lossy, so the link backs off exponentially with full
 *   jitter up to the cap (30 s by default) and does not add load to a struggling server.
 */
import { ConnectError } from '@connectrpc/connect';
import { backoffMs, between } from '../util/backoff.js';

/** Retry window after a refused connection (ms). */
export const REFUSED_RETRY_MS = { min: 200, max: 800 } as const;

/** True when the call failed because the connection was refused (walks `cause` and AggregateError's `errors`). */
export function connectionRefused(e: unknown): boolean {
  const seen = new Set<unknown>();
  const walk = (x: unknown, depth: number): boolean => {
    if (x === null || typeof x !== 'object' || seen.has(x) || depth > 8) return false;
    seen.add(x);
    const o = x as { code?: unknown; cause?: unknown; errors?: unknown };
    if (o.code === 'ECONNREFUSED') return true;
    if (Array.isArray(o.errors) && o.errors.some((y) => walk(y, depth + 1))) return true;
    return walk(o.cause, depth + 1);
  };
  return walk(e, 0);
}

export interface RetryPolicy {
  baseMs: number;
  capMs: number;
  random: () => number;
}

/** The wait before try number `attempt + 1` after `e`. */
export function retryDelayMs(e: ConnectError | unknown, attempt: number, p: RetryPolicy): { ms: number; refused: boolean } {
  if (connectionRefused(e)) return { ms: between(REFUSED_RETRY_MS.min, REFUSED_RETRY_MS.max, p.random), refused: true };
  return { ms: backoffMs(attempt, p.baseMs, p.capMs, p.random), refused: false };
}
