/**
 * The RUN_DIAGNOSTIC sweep (src/agent/diagnostics.ts) over the fake backend with injected faults,
 * and over the nvml backend talking to the fake libnvidia-ml (a hung NVML call hits the step
 * deadline).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { parseDiagnosticTests, runDiagnostics, DiagnosticParameterError, type DiagnosticsOptions } from '../../src/agent/diagnostics.js';
import { FakeBackend } from '../../src/backends/fake.js';
import { NoneBackend } from '../../src/backends/none.js';
import { NvmlBackend } from '../../src/backends/nvml.js';
import type { GpuBackend } from '../../src/backends/types.js';
import type { CheckResult } from '../../src/controlplane/model.js';
import type { ActiveFault } from '../../src/events/types.js';
import type { DeviceSnapshot, Telemetry } from '../../src/nvml/types.js';
import { defaultDevices, type FakeNvml } from '../helpers/fake-nvml.js';
import { skipReason, useFake } from '../native/util.js';

const backends: GpuBackend[] = [];
afterEach(async () => {
  for (const b of backends.splice(0)) await b.close().catch(() => undefined);
});

async function fake(count = 8, model?: string): Promise<FakeBackend> {
  const b = new FakeBackend({ count, seed: 3, ...(model ? { model } : {}) });
  await b.open();
  backends.push(b);
  return b;
}

function byName(results: CheckResult[]): Record<string, CheckResult> {
  return Object.fromEntries(results.map((r) => [r.name, r]));
}

function opts(backend: GpuBackend, extra: Partial<DiagnosticsOptions> = {}): DiagnosticsOptions {
  const registered = backend.devices();
  return { backend, previousDevices: () => registered, stepTimeoutMs: 10_000, ...extra };
}

describe('parseDiagnosticTests', () => {
  it('accepts all, the check names and gpu<N>; refuses anything else with one line', () => {
    expect([...parseDiagnosticTests(undefined).checks].sort()).toEqual(['active_faults', 'gpu', 'inventory', 'nvml']);
    expect(parseDiagnosticTests('ALL').gpus).toBeNull();
    const s = parseDiagnosticTests('nvml, gpu2,gpu5');
    expect([...s.checks].sort()).toEqual(['gpu', 'nvml']);
    expect([...(s.gpus ?? [])]).toEqual([2, 5]);
    expect(parseDiagnosticTests('gpu,gpu1').gpus).toBeNull();
    expect(() => parseDiagnosticTests('nvml,dcgm')).toThrow(DiagnosticParameterError);
    expect(() => parseDiagnosticTests('nvml,dcgm')).toThrow(/unknown diagnostic test "dcgm"/);
    expect(() => parseDiagnosticTests(' , ')).toThrow(/empty/);
  });
});

describe('runDiagnostics over the fake backend', () => {
  it('a healthy node: every check HEALTHY, details as plain strings', async () => {
    const b = await fake(8);
    const r = byName(await runDiagnostics(opts(b, { activeFaults: () => [] })));
    expect(Object.keys(r).sort()).toEqual(['active_faults', 'gpu0', 'gpu1', 'gpu2', 'gpu3', 'gpu4', 'gpu5', 'gpu6', 'gpu7', 'inventory', 'nvml']);
    for (const x of Object.values(r)) expect(x.status, `${x.name}: ${x.message}`).toBe('healthy');
    expect(r.nvml!.details).toMatchObject({ backend: 'fake', driver_version: '550.163.01', cuda_driver_version: '12.4' });
    expect(r.inventory!.details).toMatchObject({ count: '8', previous_count: '8', lost: 'none', errored: 'none' });
    const g = r.gpu0!.details!;
    expect(g.temperature_c).toMatch(/^\d+$/);
    expect(g).toMatchObject({
      ecc_mode: 'enabled',
      ecc_uncorrected_volatile: '0',
      nvlink_links: '18',
      nvlink_down: 'none',
      persistence_mode: 'true',
      pcie_link_width: '16',
      findings: 'none',
      active_faults: '0',
    });
    // H100 retires rows, not pages: unsupported, and not a failure.
    expect(g.retired_pages_pending).toBe('unsupported');
    for (const v of Object.values(g)) expect(typeof v).toBe('string');
    expect(r.gpu0!.message).toMatch(/GPU 0 healthy: \d+ C, ECC on, PCIe gen\d x16, 18\/18 NVLinks up/);
    expect(r.active_faults!.message).toBe('no active faults');
  });

  it('lost GPU, ECC, thermal, NVLink down, remapping failure -> the expected statuses', async () => {
    const b = await fake(8);
    const registered = b.devices();
    b.inject({ kind: 'gpu_lost', gpu: 1 });
    b.inject({ kind: 'ecc', gpu: 2, dbe: 2 });
    b.inject({ kind: 'temperature', gpu: 3, celsius: 97 });
    b.inject({ kind: 'temperature', gpu: 4, celsius: 88 });
    b.inject({ kind: 'nvlink_down', gpu: 5, link: 3 });
    b.inject({ kind: 'remapped_rows', gpu: 6, failure: true });
    b.inject({ kind: 'clock_reasons', gpu: 7, mask: 0x20 });
    const r = byName(await runDiagnostics({ backend: b, previousDevices: () => registered }, { test: 'all' }));

    expect(r.nvml!.status).toBe('healthy');
    expect(r.inventory!.status).toBe('unhealthy');
    expect(r.inventory!.message).toMatch(/GPU 1 is lost/);
    expect(r.inventory!.details!.lost).toBe('gpu1');

    expect(r.gpu0!.status).toBe('healthy');
    expect(r.gpu1!.status).toBe('unhealthy');
    expect(r.gpu1!.details).toMatchObject({ nvml_error: 'NVML_ERROR_GPU_IS_LOST', findings: 'gpu1/xid/79' });
    expect(r.gpu2!.status).toBe('unhealthy');
    expect(r.gpu2!.message).toMatch(/2 uncorrectable ECC errors/);
    expect(r.gpu2!.details).toMatchObject({ ecc_uncorrected_volatile: '2', findings: 'gpu2/ecc_dbe' });
    expect(r.gpu3!.status).toBe('unhealthy');
    expect(r.gpu3!.details!.temperature_c).toBe('97');
    expect(r.gpu4!.status).toBe('degraded');
    expect(r.gpu4!.message).toMatch(/temperature 88 C \(warning threshold 85 C\)/);
    expect(r.gpu5!.status).toBe('unhealthy');
    expect(r.gpu5!.details!.nvlink_down).toBe('3');
    expect(r.gpu6!.status).toBe('unhealthy');
    expect(r.gpu6!.details!.remapped_rows_failure).toBe('true');
    // One sample of a clock slowdown is no fault (rate-based since 2960733: >= 6 in 10 min).
    expect(r.gpu7!.status).toBe('healthy');
  });

  it('fewer GPUs than the instance type, and a GPU gone since registration', async () => {
    const b = await fake(4);
    const registered = [...b.devices(), { ...b.devices()[3]!, index: 4, uuid: 'GPU-vanished-0000' }];
    const r = byName(await runDiagnostics({ backend: b, previousDevices: () => registered, expectedGpuCount: 8 }));
    expect(r.inventory!.status).toBe('unhealthy');
    expect(r.inventory!.message).toMatch(/4 of 8 GPUs visible/);
    expect(r.inventory!.details).toMatchObject({ count: '4', previous_count: '5', expected_count: '8' });
    expect(r.inventory!.details!.lost).toContain('gpu4 (GPU-vanished-0000) missing');
    // The vanished GPU is judged lost (XID 79) by the telemetry judge.
    expect(r.gpu4!.status).toBe('unhealthy');
    expect(r.gpu4!.message).toMatch(/disappeared/);
    expect(r.gpu0!.status).toBe('healthy');
  });

  it('the test parameter selects checks and single GPUs; a bad one is one UNKNOWN result', async () => {
    const b = await fake(4);
    b.inject({ kind: 'ecc', gpu: 2, dbe: 1 });
    const r = await runDiagnostics(opts(b), { test: 'nvml,gpu2' });
    expect(r.map((x) => x.name)).toEqual(['nvml', 'gpu2']);
    expect(r[1]!.status).toBe('unhealthy');

    const bad = await runDiagnostics(opts(b), { test: 'burn' });
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatchObject({ name: 'diagnostic', status: 'unknown' });
    expect(bad[0]!.message).toMatch(/unknown diagnostic test "burn"/);

    const badTimeout = await runDiagnostics(opts(b), { timeout: 'soon' });
    expect(badTimeout[0]).toMatchObject({ name: 'diagnostic', status: 'unknown' });
  });

  it('a hung snapshot hits the step deadline: UNKNOWN with a message, never a hung command', async () => {
    const b = await fake(2);
    const registered = b.devices();
    // A backend whose snapshot never returns (a wedged driver), everything else real.
    const hung: GpuBackend = Object.assign(Object.create(b) as GpuBackend, { snapshot: () => new Promise<DeviceSnapshot[]>(() => undefined) });
    const t0 = Date.now();
    const r = byName(await runDiagnostics({ backend: hung, previousDevices: () => registered, stepTimeoutMs: 300 }));
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(r.nvml!.status).toBe('unknown');
    expect(r.nvml!.message).toMatch(/telemetry snapshot did not return within 300 ms/);
    expect(r.inventory!.status).toBe('healthy');
    for (const g of ['gpu0', 'gpu1']) {
      expect(r[g]!.status).toBe('unknown');
      expect(r[g]!.message).toMatch(/no snapshot: telemetry snapshot did not return within 300 ms/);
    }
    // The `timeout` parameter (seconds) sets the step deadline.
    const r2 = byName(await runDiagnostics({ backend: hung, previousDevices: () => registered }, { test: 'gpu', timeout: '0.2' }));
    expect(r2.gpu0!.message).toMatch(/within 200 ms/);
  });

  it('a failing enumeration: nvml UNHEALTHY, inventory UNKNOWN', async () => {
    const b = await fake(2);
    const broken: GpuBackend = Object.assign(Object.create(b) as GpuBackend, {
      refreshDevices: () => Promise.reject(Object.assign(new Error('NVML_ERROR_UNKNOWN (nvmlDeviceGetCount_v2)'), { code: 'NVML_ERROR_UNKNOWN' })),
    });
    const r = byName(await runDiagnostics({ backend: broken, previousDevices: () => b.devices() }));
    expect(r.nvml!.status).toBe('unhealthy');
    expect(r.nvml!.message).toMatch(/device enumeration \(refreshDevices\) failed: NVML_ERROR_UNKNOWN/);
    expect(r.inventory!.status).toBe('unknown');
    // The snapshot still worked: the GPUs are judged.
    expect(r.gpu0!.status).toBe('healthy');
  });

  it('unsupported (null) telemetry never fails a check', async () => {
    const b = await fake(1);
    const nulls = async (): Promise<DeviceSnapshot[]> =>
      (await b.snapshot()).map((s) =>
        s.ok ? { ...s, telemetry: Object.fromEntries(Object.keys(s.telemetry).map((k) => [k, null])) as unknown as Telemetry } : s,
      );
    const bare: GpuBackend = Object.assign(Object.create(b) as GpuBackend, { snapshot: nulls });
    const r = byName(await runDiagnostics({ backend: bare, previousDevices: () => b.devices() }));
    expect(r.gpu0!.status).toBe('healthy');
    expect(r.gpu0!.details).toMatchObject({
      temperature_c: 'unsupported',
      ecc_mode: 'unsupported',
      nvlink_down: 'unsupported',
      persistence_mode: 'unsupported',
    });
    expect(r.gpu0!.message).toBe('GPU 0 healthy');
  });

  it('ECC disabled or a pending mode change is DEGRADED', async () => {
    const b = await fake(1);
    const eccOff = async (): Promise<DeviceSnapshot[]> =>
      (await b.snapshot()).map((s) => (s.ok ? { ...s, telemetry: { ...s.telemetry, eccModeCurrent: false, eccModePending: true } } : s));
    const r = byName(await runDiagnostics({ backend: Object.assign(Object.create(b) as GpuBackend, { snapshot: eccOff }) }, { test: 'gpu' }));
    expect(r.gpu0!.status).toBe('degraded');
    expect(r.gpu0!.message).toMatch(/ECC is disabled/);
    expect(r.gpu0!.details!.findings).toBe('gpu0/ecc_mode,gpu0/ecc_mode_pending');
  });

  it('active faults from the store', async () => {
    const b = await fake(2);
    const fault: ActiveFault = {
      key: 'gpu1/xid/48',
      gpuIndex: 1,
      gpuUuid: b.devices()[1]!.uuid,
      type: 'xid',
      system: 'MEM',
      severity: 'critical',
      action: 'reset_gpu',
      message: 'GPU 1: XID 48 double-bit ECC error',
      metrics: { xid_code: '48' },
      sinceMs: 1,
      lastSeenMs: 2,
      count: 1,
      lastEventId: 'e1',
    };
    const r = byName(await runDiagnostics(opts(b, { activeFaults: () => [fault] })));
    expect(r.active_faults!.status).toBe('unhealthy');
    expect(r.active_faults!.message).toMatch(/1 active critical fault\(s\): gpu1\/xid\/48/);
    expect(r.active_faults!.details!['fault.gpu1/xid/48']).toMatch(/^critical: /);
    expect(r.gpu1!.details!.active_faults).toBe('1');
  });

  it('the none backend on a GPU host: nvml and inventory UNHEALTHY', async () => {
    const b = new NoneBackend('NVML failed: NVML_ERROR_DRIVER_NOT_LOADED');
    const r = byName(await runDiagnostics({ backend: b, driverError: 'NVIDIA driver not loaded (NVML_ERROR_DRIVER_NOT_LOADED)' }));
    expect(r.nvml!.status).toBe('unhealthy');
    expect(r.nvml!.message).toMatch(/no usable NVML on this GPU host: NVIDIA driver not loaded/);
    expect(r.inventory!.status).toBe('unhealthy');
    expect(Object.keys(r).filter((n) => n.startsWith('gpu'))).toEqual([]);
  });
});

describe.skipIf(skipReason !== null)('runDiagnostics over the nvml backend (fake libnvidia-ml)', () => {
  let fakeLib: FakeNvml | undefined;
  afterEach(async () => {
    fakeLib?.cleanup();
    fakeLib = undefined;
  });

  it('real NVML path: healthy sweep, then a hung NVML call hits the step deadline -> UNKNOWN', async () => {
    fakeLib = useFake({ devices: defaultDevices(2) });
    const b = new NvmlBackend({ callTimeoutMs: 10_000 });
    await b.open();
    backends.push(b);
    const registered = b.devices();
    const ok = byName(await runDiagnostics({ backend: b, previousDevices: () => registered, stepTimeoutMs: 15_000 }));
    expect(ok.nvml!.status).toBe('healthy');
    expect(ok.nvml!.details!.backend).toBe('nvml');
    expect(ok.inventory!.details!.count).toBe('2');
    expect(ok.gpu0!.details!.uuid).toBe(defaultDevices(2)[0]!.uuid);

    await fakeLib.inject({ op: 'hang', device: 1, function: '*', ms: 8000 });
    const r = byName(await runDiagnostics({ backend: b, previousDevices: () => registered, stepTimeoutMs: 500 }, { test: 'nvml,gpu' }));
    await fakeLib.inject({ op: 'recover', device: 1 });
    expect(r.nvml!.status).toBe('unknown');
    expect(r.nvml!.message).toMatch(/did not return within 500 ms/);
    expect(r.gpu1!.status).toBe('unknown');
    expect(r.gpu1!.message).toMatch(/GPU 1: no snapshot: .* did not return within 500 ms/);
  }, 60_000);
});
