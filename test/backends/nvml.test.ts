/**
 * The shared backend suite against the nvml backend: the real addon over the project's fake
 * libnvidia-ml, configured as the same 8 H100s the fake backend models. Faults go in over the
 * fake library's control socket.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { NvmlBackend } from '../../src/backends/nvml.js';
import { defaultDevices, ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';
import { sharedBackendSuite } from './shared-suite.js';

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

sharedBackendSuite(
  'nvml (fake libnvidia-ml)',
  async () => {
    if (!shared) {
      const fake = FakeNvml.create({ devices: defaultDevices(8) });
      fake.applyToProcess();
      const backend = new NvmlBackend({ libraryPath: FAKE_NVML_LIB, callTimeoutMs: 10_000, watch: { waitTimeoutMs: 100 } });
      await backend.open();
      shared = { fake, backend };
    }
    const { fake, backend } = shared;
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
