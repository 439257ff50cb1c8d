/** Shared helpers of the native-addon tests (test/native/*.test.ts). */
import { afterEach } from 'vitest';
import { FakeNvml, ensureFakeNvmlBuilt, type FakeNvmlConfig } from '../helpers/fake-nvml.js';
import { addonStatus, type Nvml } from '../../src/nvml/index.js';
import { poll } from '../helpers/wait.js';

/** Why the native tier cannot run here, or null when it can (the addon loads and the fake builds). */
export function nativeSkipReason(): string | null {
  const st = addonStatus();
  if (!st.ok) return `native addon unavailable: ${st.reason}`;
  try {
    ensureFakeNvmlBuilt();
  } catch (e) {
    return `fake libnvidia-ml could not be built: ${(e as Error).message}`;
  }
  return null;
}

export const skipReason = nativeSkipReason();
if (skipReason) {
  // CI and release builds set NAVARCH_REQUIRE_ADDON=1: there a missing addon is a failure, not a skip.
  if (process.env.NAVARCH_REQUIRE_ADDON === '1') throw new Error(`[test/native] NAVARCH_REQUIRE_ADDON=1 but ${skipReason}`);
  console.warn(`[test/native] skipped: ${skipReason}`);
}

/** A fake configured for this process (NAVARCH_NVML_LIBRARY / NAVARCH_FAKE_NVML_CONFIG set). */
export function useFake(config: Partial<FakeNvmlConfig> = {}): FakeNvml {
  const fake = FakeNvml.create(config);
  fake.applyToProcess();
  return fake;
}

/** The fake and the NVML session of the running test (either may be unset). */
export interface NativeSession {
  fake?: FakeNvml;
  nvml?: Nvml;
}

/**
 * Call inside a describe block: returns a holder for each test's fake and NVML session, and
 * registers an afterEach that closes the session first, then removes the fake, and clears both.
 */
export function useSession(): NativeSession {
  const ctx: NativeSession = {};
  afterEach(async () => {
    await ctx.nvml?.close();
    ctx.nvml = undefined;
    ctx.fake?.cleanup();
    ctx.fake = undefined;
  });
  return ctx;
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  await poll(what, cond, { timeoutMs });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
