// Opening NVML: every init failure is a typed NvmlError; a missing library or symbol is reported,
// never thrown at require time.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultDevices, FAKE_NVML_LIB, type FakeNvml } from '../helpers/fake-nvml.js';
import { addonStatus, NvmlError, openNvml } from '../../src/nvml/index.js';
import { skipReason, useFake } from './util.js';

describe.skipIf(skipReason !== null)('NVML addon: open failures', () => {
  let fake: FakeNvml | undefined;
  afterEach(() => {
    fake?.cleanup();
    fake = undefined;
  });

  it('loads without NVML: addonStatus is ok', () => {
    expect(addonStatus()).toEqual({ ok: true });
  });

  const initErrors: Array<[number, string]> = [
    [9, 'NVML_ERROR_DRIVER_NOT_LOADED'],
    [18, 'NVML_ERROR_LIB_RM_VERSION_MISMATCH'],
    [4, 'NVML_ERROR_NO_PERMISSION'],
    [28, 'NVML_ERROR_GPU_NOT_FOUND'],
    [17, 'NVML_ERROR_OPERATING_SYSTEM'],
    [999, 'NVML_ERROR_UNKNOWN'],
  ];
  for (const [status, code] of initErrors) {
    it(`nvmlInit_v2 returning ${status} rejects with ${code}`, async () => {
      fake = useFake({ initError: status, devices: defaultDevices(1) });
      const err = await openNvml().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NvmlError);
      expect(err).toMatchObject({ code, status, fn: 'nvmlInit_v2' });
      expect((err as Error).message).toContain(code);
    });
  }

  it('a failed init leaves no reference behind: the next open succeeds', async () => {
    fake = useFake({ initError: 9, devices: defaultDevices(1) });
    await expect(openNvml()).rejects.toMatchObject({ code: 'NVML_ERROR_DRIVER_NOT_LOADED' });
    fake.update({ devices: defaultDevices(2) });
    const nvml = await openNvml();
    expect(await nvml.devices()).toHaveLength(2);
    await nvml.close();
  });

  it('a missing library is NVML_LIBRARY_NOT_FOUND with the dlopen reason', async () => {
    const err = (await openNvml({ libraryPath: '/nonexistent/libnvidia-ml.so.1' }).catch((e: unknown) => e)) as NvmlError;
    expect(err).toBeInstanceOf(NvmlError);
    expect(err.code).toBe('NVML_LIBRARY_NOT_FOUND');
    expect(err.status).toBe(-1);
    expect(err.message).toMatch(/nonexistent.*No such file/);
  });

  it('a relative library path is refused with a one-line error', async () => {
    const err = (await openNvml({ libraryPath: 'lib/libnvidia-ml.so.1' }).catch((e: unknown) => e)) as NvmlError;
    expect(err.code).toBe('NVML_LIBRARY_NOT_FOUND');
    expect(err.message).toMatch(/absolute/);
    expect(err.message).not.toContain('\n');
  });

  it('a library without a required entry point is NVML_SYMBOL_NOT_FOUND', async () => {
    fake = useFake({ devices: defaultDevices(1), missingSymbols: ['nvmlDeviceGetHandleByIndex_v2'] });
    const err = (await openNvml().catch((e: unknown) => e)) as NvmlError;
    expect(err.code).toBe('NVML_SYMBOL_NOT_FOUND');
    expect(err.fn).toBe('nvmlDeviceGetHandleByIndex_v2');
  });

  it('NAVARCH_NVML_LIBRARY is used when no path is given, an explicit path wins', async () => {
    fake = useFake({ devices: defaultDevices(1) });
    const a = await openNvml();
    expect(a.libraryPath).toBe(FAKE_NVML_LIB);
    await a.close();
    await expect(openNvml({ libraryPath: '/nonexistent/x.so' })).rejects.toMatchObject({ code: 'NVML_LIBRARY_NOT_FOUND' });
  });

  it('bad options are clear errors', async () => {
    await expect(openNvml({ callTimeoutMs: -1 })).rejects.toThrow(/callTimeoutMs must be an integer/);
    await expect(openNvml({ callTimeoutMs: 1.5 })).rejects.toThrow(/callTimeoutMs/);
    await expect(openNvml({ libraryPath: '' })).rejects.toThrow(/libraryPath/);
  });

  it('a hung nvmlInit settles with NVML_CALL_TIMEOUT instead of hanging open()', async () => {
    fake = useFake({ devices: defaultDevices(1), initHangMs: 4000 });
    const t0 = Date.now();
    const err = (await openNvml({ callTimeoutMs: 300 }).catch((e: unknown) => e)) as NvmlError;
    expect(err.code).toBe('NVML_CALL_TIMEOUT');
    expect(err.fn).toBe('nvmlInit_v2');
    expect(Date.now() - t0).toBeLessThan(3500);
  });

  it('using a closed session is NVML_CLOSED', async () => {
    fake = useFake({ devices: defaultDevices(1) });
    const nvml = await openNvml();
    await nvml.close();
    await nvml.close(); // idempotent
    await expect(nvml.snapshot()).rejects.toMatchObject({ code: 'NVML_CLOSED' });
    expect(() => nvml.watch(() => undefined)).toThrow(NvmlError);
  });
});

describe('NVML facade without the addon', () => {
  it('openNvml rejects NVML_ADDON_UNAVAILABLE and addonStatus says why', async () => {
    const saved = process.env.NAVARCH_NVML_ADDON;
    process.env.NAVARCH_NVML_ADDON = '/nonexistent/navarch_nvml.node';
    try {
      vi.resetModules();
      const fresh = await import('../../src/nvml/index.js');
      const st = fresh.addonStatus();
      expect(st.ok).toBe(false);
      expect(!st.ok && st.reason).toMatch(/could not be loaded.*nonexistent/);
      const err = (await fresh.openNvml().catch((e: unknown) => e)) as InstanceType<typeof fresh.NvmlError>;
      expect(err).toBeInstanceOf(fresh.NvmlError);
      expect(err.code).toBe('NVML_ADDON_UNAVAILABLE');
      process.env.NAVARCH_NVML_ADDON = 'relative/addon.node';
      vi.resetModules();
      const again = await import('../../src/nvml/index.js');
      expect(again.addonStatus()).toEqual({ ok: false, reason: "NAVARCH_NVML_ADDON must be an absolute path, got 'relative/addon.node'" });
    } finally {
      if (saved === undefined) delete process.env.NAVARCH_NVML_ADDON;
      else process.env.NAVARCH_NVML_ADDON = saved;
      vi.resetModules();
    }
  });
});
