/**
 * The shared backend suite against the nvml backend: the real addon over the project's fake
 * libnvidia-ml, configured as the same 8 H100s the fake backend models. Faults go in over the
 * fake library's control socket.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
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

sharedBackendSuite(
  'nvml (fake libnvidia-ml)',
  async () => {
    const fake = FakeNvml.create({ devices: defaultDevices(8) });
    fake.applyToProcess();
    const backend = new NvmlBackend({ libraryPath: FAKE_NVML_LIB, callTimeoutMs: 10_000, watch: { waitTimeoutMs: 100 } });
    await backend.open();
    return {
      backend,
      async inject(f) {
        switch (f.kind) {
          case 'xid':
            return fake.xid(f.gpu, f.xid);
          case 'gpu_lost':
            return fake.lose(f.gpu);
          case 'recover':
            return fake.recover(f.gpu);
          case 'temperature':
            return fake.set(f.gpu, 'temperatureC', f.celsius);
        }
      },
      async cleanup() {
        await backend.close();
        fake.cleanup();
      },
    };
  },
  reason,
);
