/**
 * Backend selection over fake sysfs/dev trees x NVML opening or failing.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendSelectionError, selectBackend } from '../../src/backends/select.js';
import { detectGpuHost } from '../../src/host/detect.js';
import { defaultDevices, ensureFakeNvmlBuilt, FakeNvml } from '../helpers/fake-nvml.js';

const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

interface TreeSpec {
  pci?: Array<{ addr: string; vendor: string; cls: string }>;
  dev?: string[];
}

function tree(spec: TreeSpec): string {
  const root = mkdtempSync(join(tmpdir(), 'navarch-sysroot-'));
  roots.push(root);
  mkdirSync(join(root, 'sys/bus/pci/devices'), { recursive: true });
  mkdirSync(join(root, 'dev'), { recursive: true });
  for (const p of spec.pci ?? []) {
    const d = join(root, 'sys/bus/pci/devices', p.addr);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'vendor'), `${p.vendor}\n`);
    writeFileSync(join(d, 'class'), `${p.cls}\n`);
  }
  for (const n of spec.dev ?? []) writeFileSync(join(root, 'dev', n), '');
  return root;
}

const H100_PCI = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb].map((b) => ({ addr: `0000:${b.toString(16)}:00.0`, vendor: '0x10de', cls: '0x030200' }));
const INTEL_NIC = { addr: '0000:00:03.0', vendor: '0x8086', cls: '0x020000' };
const NVSWITCH = { addr: '0000:05:00.0', vendor: '0x10de', cls: '0x068000' };
const VGA_OTHER = { addr: '0000:00:02.0', vendor: '0x1234', cls: '0x030000' };

const MISSING_LIB = '/nonexistent/navarch-test/libnvidia-ml.so.1';
const failingEnv = { NAVARCH_NVML_LIBRARY: MISSING_LIB };

describe('GPU host detection', () => {
  it('finds NVIDIA display/3D PCI functions and ignores other vendors and NVSwitches', async () => {
    const root = tree({ pci: [...H100_PCI, INTEL_NIC, NVSWITCH, VGA_OTHER] });
    const ev = await detectGpuHost({ sysRoot: root });
    expect(ev.nvidiaPciDevices).toHaveLength(8);
    expect(ev.isGpuHost).toBe(true);
    expect(ev.summary).toBe('8 NVIDIA PCI devices');
  });
  it('counts /dev/nvidiaN nodes and /dev/nvidiactl', async () => {
    const ev = await detectGpuHost({ sysRoot: tree({ dev: ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm'] }) });
    expect(ev.gpuDeviceNodes).toEqual(['nvidia0', 'nvidia1']);
    expect(ev.controlNode).toBe(true);
    expect(ev.isGpuHost).toBe(true);
  });
  it('uses the instance type table', async () => {
    const ev = await detectGpuHost({ sysRoot: tree({}), instanceType: 'p5.48xlarge' });
    expect(ev.isGpuHost).toBe(true);
    expect(ev.summary).toBe('instance type p5.48xlarge (8 NVIDIA H100)');
    expect((await detectGpuHost({ sysRoot: tree({}), instanceType: 'm5.large' })).isGpuHost).toBe(false);
  });
  it('a bare machine is not a GPU host', async () => {
    const ev = await detectGpuHost({ sysRoot: tree({ pci: [INTEL_NIC, NVSWITCH, VGA_OTHER], dev: ['null'] }) });
    expect(ev.isGpuHost).toBe(false);
    expect(ev.summary).toMatch(/^no NVIDIA PCI devices/);
  });
  it('a missing sysfs root is simply "no evidence"', async () => {
    expect((await detectGpuHost({ sysRoot: '/nonexistent/root' })).isGpuHost).toBe(false);
  });
});

describe('selectBackend with NVML failing', () => {
  it('NAVARCH_FAKE_GPU=true forces fake, even on a GPU host', async () => {
    const r = await selectBackend({ mode: 'auto', env: { ...failingEnv, NAVARCH_FAKE_GPU: 'true', NAVARCH_GPU_COUNT: '4' }, sysRoot: tree({ pci: H100_PCI }) });
    expect(r.backend.kind).toBe('fake');
    expect(r.backend.reason).toBe('NAVARCH_FAKE_GPU=true');
    expect(r.backend.devices()).toHaveLength(4);
    expect(r.driverError).toBeUndefined();
    await r.backend.close();
  });
  it('only the exact string "true" forces fake (as in Navarch)', async () => {
    const r = await selectBackend({ mode: 'auto', env: { ...failingEnv, NAVARCH_FAKE_GPU: 'TRUE' }, sysRoot: tree({ pci: H100_PCI }) });
    expect(r.backend.kind).toBe('none');
  });
  it('auto on a host with NVIDIA PCI devices: none backend + driver_error, never fake', async () => {
    const r = await selectBackend({ mode: 'auto', env: failingEnv, sysRoot: tree({ pci: H100_PCI }), now: () => 1_700_000_000_000 });
    expect(r.backend.kind).toBe('none');
    expect(r.backend.devices()).toEqual([]);
    expect(await r.backend.snapshot()).toEqual([]);
    expect(r.driverError).toMatchObject({
      type: 'driver_error',
      system: 'DRIVER',
      gpuIndex: -1,
      gpuUuid: '',
      severity: 'critical',
      action: 'reboot',
      fault: 'raise',
      key: 'node/driver_error',
      source: 'agent',
      timeMs: 1_700_000_000_000,
    });
    expect(r.driverError?.message).toMatch(/^NVML failed: NVML_[A-Z_]+( \(\w+\))? on a host with 8 NVIDIA PCI devices$/);
    expect(r.driverError?.metrics.nvidia_pci_devices).toBe('8');
    expect(r.backend.reason).toBe(r.driverError?.message);
    expect(r.warnings.join('\n')).toMatch(/NOT falling back to fake GPUs/);
  });
  it('auto with /dev/nvidia0 only: none backend', async () => {
    const r = await selectBackend({ mode: 'auto', env: failingEnv, sysRoot: tree({ dev: ['nvidia0', 'nvidiactl'] }) });
    expect(r.backend.kind).toBe('none');
    expect(r.driverError?.message).toMatch(/on a host with 1 \/dev\/nvidiaN node$/);
  });
  it('auto on an empty tree with instance type p5.48xlarge: none backend, expected count in metrics', async () => {
    const r = await selectBackend({ mode: 'auto', env: failingEnv, sysRoot: tree({}), instanceType: 'p5.48xlarge' });
    expect(r.backend.kind).toBe('none');
    expect(r.driverError?.metrics).toMatchObject({ instance_type: 'p5.48xlarge', expected_gpu_count: '8' });
  });
  it('auto on a host without NVIDIA hardware: fake, with a loud warning', async () => {
    const r = await selectBackend({ mode: 'auto', env: failingEnv, sysRoot: tree({ pci: [INTEL_NIC] }) });
    expect(r.backend.kind).toBe('fake');
    expect(r.backend.devices()).toHaveLength(8);
    expect(r.driverError).toBeUndefined();
    expect(r.backend.reason).toMatch(/^NVML unavailable \(NVML_[A-Z_]+.*\) and no NVIDIA hardware on this host: fake GPUs$/);
    expect(r.warnings).toHaveLength(1);
    await r.backend.close();
  });
  it('nvml mode: a hard error', async () => {
    await expect(selectBackend({ mode: 'nvml', env: failingEnv, sysRoot: tree({}) })).rejects.toThrow(/^nvml backend: NVML failed: NVML_/);
    await expect(selectBackend({ mode: 'nvml', env: failingEnv, sysRoot: tree({}) })).rejects.toBeInstanceOf(BackendSelectionError);
  });
  it('nvml mode with a scenario: a clear error', async () => {
    await expect(selectBackend({ mode: 'nvml', env: failingEnv, scenarioFile: '/tmp/s.yaml' })).rejects.toThrow(
      '/tmp/s.yaml: a scenario needs the fake backend, not nvml',
    );
  });
  it('fake mode with a bad NAVARCH_GPU_COUNT: one-line error', async () => {
    await expect(selectBackend({ mode: 'fake', env: { NAVARCH_GPU_COUNT: '-3' } })).rejects.toThrow(
      'NAVARCH_GPU_COUNT: expected a whole number 0..64, got "-3"',
    );
    await expect(selectBackend({ mode: 'fake', env: { NAVARCH_GPU_COUNT: 'eight' } })).rejects.toThrow(
      'NAVARCH_GPU_COUNT: expected a whole number 0..64, got "eight"',
    );
    await expect(selectBackend({ mode: 'fake', env: { NAVARCH_GPU_COUNT: '1000' } })).rejects.toThrow('NAVARCH_GPU_COUNT: 1000 is more than 64');
  });
  it('a bad mode is rejected', async () => {
    await expect(selectBackend({ mode: 'gpu' as never, env: {} })).rejects.toThrow('backend mode: expected auto, nvml or fake, got "gpu"');
  });
});

async function addonReason(): Promise<string | null> {
  if (!existsSync(fileURLToPath(new URL('../../src/nvml/index.ts', import.meta.url)))) return 'src/nvml/index.ts (the addon facade) is not in the tree yet';
  try {
    ensureFakeNvmlBuilt();
    const facade = (await import('../../src/nvml/index.js')) as unknown as { addonStatus(): { ok: true } | { ok: false; reason: string } };
    const st = facade.addonStatus();
    return st.ok ? null : `native addon unavailable: ${st.reason}`;
  } catch (err) {
    return `addon or fake libnvidia-ml unavailable: ${(err as Error).message.split('\n')[0]}`;
  }
}
const addonSkip = await addonReason();
if (addonSkip) console.warn(`[skip] selectBackend over the real addon: ${addonSkip}`);

describe.skipIf(addonSkip !== null)('selectBackend over the real addon and the fake libnvidia-ml', () => {
  const TREES: Array<[string, () => string, string | undefined]> = [
    ['a bare host', () => tree({}), undefined],
    ['8 NVIDIA PCI devices', () => tree({ pci: H100_PCI }), undefined],
    ['/dev/nvidia0', () => tree({ dev: ['nvidia0', 'nvidiactl'] }), undefined],
    ['instance type p5.48xlarge', () => tree({}), 'p5.48xlarge'],
  ];
  for (const [what, mk, instanceType] of TREES) {
    it(`auto: NVML opens on ${what} -> nvml backend`, async () => {
      const fake = FakeNvml.create({ devices: defaultDevices(8) });
      fake.applyToProcess(); // the library reads its config from the process environment
      try {
        const r = await selectBackend({ mode: 'auto', env: fake.env(), sysRoot: mk(), ...(instanceType ? { instanceType } : {}) });
        expect(r.backend.kind).toBe('nvml');
        expect(r.driverError).toBeUndefined();
        expect(r.warnings).toEqual([]);
        await r.backend.close();
      } finally {
        fake.cleanup();
      }
    });
  }
  it('nvml mode: NVML opens -> nvml backend', async () => {
    const fake = FakeNvml.create({ devices: defaultDevices(8) });
    fake.applyToProcess();
    try {
      const r = await selectBackend({ mode: 'nvml', env: fake.env(), sysRoot: tree({}) });
      expect(r.backend.kind).toBe('nvml');
      expect(r.backend.devices()).toHaveLength(8);
      expect(r.backend.reason).toMatch(/^NVML opened/);
      expect(r.driverError).toBeUndefined();
      await r.backend.close();
    } finally {
      fake.cleanup();
    }
  });
  it('auto: initError 9 on a GPU host -> none + driver_error naming NVML_ERROR_DRIVER_NOT_LOADED', async () => {
    const fake = FakeNvml.create({ devices: defaultDevices(8), initError: 9 });
    fake.applyToProcess();
    try {
      const r = await selectBackend({ mode: 'auto', env: fake.env(), sysRoot: tree({ pci: H100_PCI }) });
      expect(r.backend.kind).toBe('none');
      expect(r.driverError?.message).toBe('NVML failed: NVML_ERROR_DRIVER_NOT_LOADED (nvmlInit_v2) on a host with 8 NVIDIA PCI devices');
      expect(r.driverError?.metrics).toMatchObject({ nvml_error: 'NVML_ERROR_DRIVER_NOT_LOADED', nvml_status: '9', nvml_function: 'nvmlInit_v2' });
    } finally {
      fake.cleanup();
    }
  });
  it('auto: a hanging nvmlInit is bounded by the call timeout -> none + driver_error on a GPU host', async () => {
    const fake = FakeNvml.create({ devices: defaultDevices(2), initHangMs: 3000 });
    fake.applyToProcess();
    try {
      const r = await selectBackend({
        mode: 'auto',
        env: fake.env(),
        sysRoot: tree({ dev: ['nvidia0', 'nvidia1', 'nvidiactl'] }),
        nvml: { callTimeoutMs: 300 },
      });
      expect(r.backend.kind).toBe('none');
      expect(r.driverError?.message).toBe('NVML failed: NVML_CALL_TIMEOUT (nvmlInit_v2) on a host with 2 /dev/nvidiaN nodes');
    } finally {
      fake.cleanup();
    }
  });
  it('auto: initError 9 on a bare host -> fake with a warning', async () => {
    const fake = FakeNvml.create({ devices: defaultDevices(8), initError: 9 });
    fake.applyToProcess();
    try {
      const r = await selectBackend({ mode: 'auto', env: fake.env(), sysRoot: tree({}) });
      expect(r.backend.kind).toBe('fake');
      expect(r.backend.reason).toMatch(/NVML_ERROR_DRIVER_NOT_LOADED/);
      await r.backend.close();
    } finally {
      fake.cleanup();
    }
  });
});
