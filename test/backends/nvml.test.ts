/**
 * The shared backend suite against the nvml backend: the real addon over the project's fake
 * libnvidia-ml, configured as the same 8 H100s the fake backend models. Faults go in over the
 * fake library's control socket.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { NvmlBackend } from '../../src/backends/nvml.js';
import { defaultDevices, ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';
import { nvmlEventsToInputs } from '../../src/sources/nvml-events.js';
import { judgeSnapshot } from '../../src/sources/telemetry.js';
import { sharedBackendSuite, waitFor } from './shared-suite.js';

async function skipReason(): Promise<string | null> {
  if (process.platform !== 'linux') return 'the addon and the fake libnvidia-ml are Linux-only';
  if (!existsSync(fileURLToPath(new URL('../../src/nvml/index.ts', import.meta.url)))) return 'src/nvml/index.ts (the addon facade) is not in the tree yet';
  try {
    ensureFakeNvmlBuilt();
  } catch (err) {
    return `cannot build the fake libnvidia-ml: ${(err as Error).message}`;
  }
  if (!existsSync(FAKE_NVML_LIB)) return `${FAKE_NVML_LIB} missing`;
  try {
    const facade = (await import('../../src/nvml/index.js')) as unknown as { addonStatus(): { ok: true } | { ok: false; reason: string } };
    const st = facade.addonStatus();
    if (!st.ok) return `native addon unavailable: ${st.reason}`;
  } catch (err) {
    return `cannot load the addon facade: ${(err as Error).message.split('\n')[0]}`;
  }
  return null;
}

const reason = await skipReason();

// One fake library + one NVML session for the whole file (as the agent holds one session for its
// lifetime); each test's cleanup undoes its faults. Re-opening NVML per test would also exercise
// the addon's shutdown/re-init path, which is the native tests' business.
let shared: { fake: FakeNvml; backend: NvmlBackend } | null = null;

afterAll(async () => {
  if (!shared) return;
  await shared.backend.close();
  shared.fake.cleanup();
  shared = null;
});

async function getShared(): Promise<{ fake: FakeNvml; backend: NvmlBackend }> {
  if (!shared) {
    const fake = FakeNvml.create({ devices: defaultDevices(8) });
    fake.applyToProcess();
    const backend = new NvmlBackend({ libraryPath: FAKE_NVML_LIB, callTimeoutMs: 10_000, watch: { waitTimeoutMs: 100 } });
    await backend.open();
    shared = { fake, backend };
  }
  return shared;
}

sharedBackendSuite(
  'nvml (fake libnvidia-ml)',
  async () => {
    const { fake, backend } = await getShared();
    const touched = new Set<number>();
    return {
      backend,
      async inject(f) {
        touched.add(f.gpu);
        switch (f.kind) {
          case 'xid':
            return fake.xid(f.gpu, f.xid);
          case 'gpu_lost':
            return fake.lose(f.gpu);
          case 'recover':
            return fake.recover(f.gpu);
          case 'temperature':
            return fake.set(f.gpu, 'temperatureC', f.celsius);
          case 'clock_reasons':
            return fake.set(f.gpu, 'clockEventReasons', f.mask);
          case 'power':
            return fake.set(f.gpu, 'powerUsageMw', Math.round(f.watts * 1000));
          case 'ecc':
            await fake.set(f.gpu, 'eccVolatileUncorrected', f.dbe);
            await fake.set(f.gpu, 'eccAggregateUncorrected', f.dbe);
            await fake.inject({ op: 'event', device: f.gpu, type: 'ecc_dbe' });
            return;
        }
      },
      async cleanup() {
        for (const gpu of touched) {
          await fake.recover(gpu);
          const t = defaultDevices(8)[gpu]!.telemetry!;
          for (const k of ['temperatureC', 'clockEventReasons', 'powerUsageMw', 'eccVolatileUncorrected', 'eccAggregateUncorrected'] as const) {
            await fake.set(gpu, k, Number(t[k]));
          }
        }
      },
    };
  },
  reason,
);

describe.skipIf(reason !== null)('nvml backend: a hung NVML call', () => {
  it('a snapshot call that hangs becomes a per-device NVML_CALL_TIMEOUT, judged as a driver_error', async () => {
    const { fake } = await getShared();
    // A second session on the same library with a short deadline.
    const quick = new NvmlBackend({ libraryPath: FAKE_NVML_LIB, callTimeoutMs: 300 });
    await quick.open();
    try {
      await fake.inject({ op: 'hang', device: 1, function: 'nvmlDeviceGetTemperature', ms: 20_000 }); // released by recover() below
      const snap = await quick.snapshot();
      expect(snap).toHaveLength(8);
      const s1 = snap[1]!;
      expect(s1.ok).toBe(false);
      if (!s1.ok) expect(s1.error).toMatchObject({ code: 'NVML_CALL_TIMEOUT', fn: 'nvmlDeviceGetTemperature' });
      expect(snap.filter((s) => s.ok)).toHaveLength(7);
      expect(quick.suspectDevices()).toContain(1);
      const { events } = judgeSnapshot(null, snap);
      expect(events).toMatchObject([
        {
          key: 'gpu1/driver_error',
          type: 'driver_error',
          severity: 'critical',
          metrics: { nvml_error: 'NVML_CALL_TIMEOUT', nvml_function: 'nvmlDeviceGetTemperature' },
        },
      ]);
      await fake.recover(1);
      const back = await waitFor('GPU 1 to answer again', async () => {
        const s = await quick.snapshot();
        return s[1]?.ok ? s : undefined;
      });
      expect(back.every((s) => s.ok)).toBe(true);
    } finally {
      await quick.close();
    }
  });
});

describe.skipIf(reason !== null)('nvml backend: an XID storm', () => {
  it('merged NVML events keep exact counts through classification', async () => {
    const { fake, backend } = await getShared();
    let total = 0;
    const inputs: Array<{ key: string; count?: number }> = [];
    const w = backend.watch((batch) => {
      for (const e of batch) total += e.count;
      inputs.push(...nvmlEventsToInputs(batch));
    });
    try {
      await waitFor('registration', () => w.stats().registered.length === 8);
      const N = 20_000;
      await fake.inject({ op: 'storm', device: 0, xid: 13, count: N, distinct: 1 });
      await waitFor('every storm event delivered or counted as dropped', () => total + w.stats().dropped >= N, 100_000);
      expect(w.stats().dropped).toBe(0); // one distinct event: everything merges
      expect(total).toBe(N);
      expect(inputs.every((i) => i.key === 'gpu0/xid/13')).toBe(true);
      expect(inputs.reduce((a, i) => a + (i.count ?? 1), 0)).toBe(N);
      expect(inputs.length).toBeLessThan(N); // merged, not N appends
    } finally {
      await w.stop();
    }
  }, 120_000);
});
