/**
 * Retry timing, in one place: capped exponential backoff with full jitter, and a jittered
 * interval. Pure (the randomness is injected), so the tests pin every value.
 */

/** Uniform in [0, min(cap, base * 2^attempt)], at least 10 ms. */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.max(10, Math.floor(random() * ceiling));
}

/** `ms` +-10 %, at least 1 ms. */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.max(1, Math.round(ms * (0.9 + 0.2 * random())));
}

/** Uniform in [minMs, maxMs]. */
export function between(minMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(minMs + (maxMs - minMs) * random());
}
