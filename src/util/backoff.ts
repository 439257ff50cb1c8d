/**
 * Retry timing, in one place: capped exponential backoff with full jitter, and a jittered
 * interval. Pure (the randomness is injected), so the tests pin every value.
 */

/** min(cap, base * 2^attempt): the exponential step without jitter. */
export function exponentialMs(attempt: number, baseMs: number, capMs: number): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
}

/** Uniform in [0, min(cap, base * 2^attempt)], at least 10 ms (full jitter). */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.max(10, Math.floor(random() * exponentialMs(attempt, baseMs, capMs)));
}

/** `ms` +-`spread` (default 10 %), at least 1 ms. */
export function jittered(ms: number, random: () => number = Math.random, spread = 0.1): number {
  return Math.max(1, Math.round(ms * (1 - spread + 2 * spread * random())));
}

/** Uniform in [minMs, maxMs]. */
export function between(minMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(minMs + (maxMs - minMs) * random());
}
