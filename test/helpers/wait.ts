/**
 * The test tree's one polling helper. The per-directory helpers (`until` in test/native,
 * `waitFor` in test/controlplane, test/deploy, test/backends and test/e2e) keep their own
 * argument orders for their call sites and delegate here.
 */
export interface PollOptions {
  /** Give up after this long (default 20 s). */
  timeoutMs?: number;
  /** Pause between tries (default 10 ms). */
  everyMs?: number;
  /** A throwing `get` counts as "not yet" and its last error is quoted on timeout; otherwise it fails the wait at once. */
  retryErrors?: boolean;
}

/** Calls `get` until it returns a truthy value and returns that value; throws naming `what` after the timeout. */
export async function poll<T>(what: string, get: () => T | Promise<T>, o: PollOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = o.timeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let lastErr: Error | null = null;
  for (;;) {
    try {
      const v = await get();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      if (!o.retryErrors) throw err;
      lastErr = err as Error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, o.everyMs ?? 10));
  }
}
