/**
 * NVML event classification: every event type, merged counts, and the fake backend's events
 * going through the same classifier.
 */
import { describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/backends/fake.js';
import type { NvmlEvent, NvmlEventType } from '../../src/nvml/types.js';
import { classifyNvmlEvent, nvmlEventsToInputs } from '../../src/sources/nvml-events.js';
import { waitFor } from './shared-suite.js';

function ev(type: NvmlEventType, over: Partial<NvmlEvent> = {}): NvmlEvent {
  return {
    type,
    eventTypeMask: 0,
    data: 0,
    deviceIndex: 2,
    uuid: 'GPU-2',
    pciBusId: '00000000:3A:00.0',
    gpuInstanceId: null,
    computeInstanceId: null,
    monotonicNs: 1n,
    wallTimeMs: 1_700_000_000_123,
    count: 1,
    ...over,
  };
}

describe('classifyNvmlEvent', () => {
  it('xid: the catalog classification, the event time, source nvml', () => {
    const x = classifyNvmlEvent(ev('xid', { data: 48 }))!;
    expect(x).toMatchObject({
      type: 'xid',
      system: 'DRIVER',
      gpuIndex: 2,
      gpuUuid: 'GPU-2',
      timeMs: 1_700_000_000_123,
      source: 'nvml',
      key: 'gpu2/xid/48',
      metrics: { xid_code: '48' },
    });
    expect(x.count).toBeUndefined();
    expect(classifyNvmlEvent(ev('xid', { data: 13 }), { source: 'fake' })).toMatchObject({ source: 'fake', key: 'gpu2/xid/13' });
  });

  it('xid 999 stays 999', () => {
    expect(classifyNvmlEvent(ev('xid', { data: 999 }))!.metrics.xid_code).toBe('999');
  });

  it('a merged event carries its count', () => {
    expect(classifyNvmlEvent(ev('xid', { data: 13, count: 1000 }))!.count).toBe(1000);
    expect(classifyNvmlEvent(ev('ecc_sbe', { count: 250 }))).toMatchObject({ count: 250, metrics: { ecc_sbe_count: '250' } });
  });

  it('gpu_lost is reported as XID 79 (critical, raise, key gpu<i>/xid/79)', () => {
    expect(classifyNvmlEvent(ev('gpu_lost'))).toMatchObject({
      type: 'xid',
      system: 'DRIVER',
      severity: 'critical',
      fault: 'raise',
      key: 'gpu2/xid/79',
      metrics: { xid_code: '79', nvml_error: 'NVML_ERROR_GPU_IS_LOST' },
    });
  });

  it('ECC events: Navarch memory events', () => {
    expect(classifyNvmlEvent(ev('ecc_sbe'))).toMatchObject({
      type: 'ecc_sbe',
      system: 'MEM',
      severity: 'info',
      fault: 'none',
      metrics: { ecc_sbe_count: '1' },
    });
    expect(classifyNvmlEvent(ev('ecc_dbe'))).toMatchObject({
      type: 'ecc_dbe',
      system: 'MEM',
      severity: 'critical',
      action: 'reset_gpu',
      fault: 'raise',
      key: 'gpu2/ecc_dbe',
      metrics: { ecc_dbe_count: '1' },
    });
  });

  it('newer event types are classified', () => {
    const c = (t: NvmlEventType, data = 0) => {
      const r = classifyNvmlEvent(ev(t, { data }))!;
      return [r.type, r.system, r.severity, r.action, r.key, r.fault].join(' ');
    };
    expect(c('ecc_storm')).toBe('ecc_sbe MEM warning none gpu2/ecc_sbe_storm none');
    expect(c('dram_retirement_event')).toBe('memory MEM warning reset_gpu gpu2/dram_retirement none');
    expect(c('dram_retirement_failure')).toBe('memory MEM critical reset_gpu gpu2/dram_retirement_failure raise');
    expect(c('non_fatal_poison')).toBe('memory MEM warning restart_app gpu2/poison none');
    expect(c('fatal_poison')).toBe('memory MEM critical reset_gpu gpu2/fatal_poison raise');
    expect(c('gpu_unavailable')).toBe('driver_error DRIVER critical reset_gpu gpu2/gpu_unavailable raise');
    expect(c('gpu_recovery_action', 2)).toBe('driver_error DRIVER critical reboot gpu2/recovery_action raise');
    expect(c('gpu_recovery_action', 0)).toBe('driver_error DRIVER warning none gpu2/recovery_action none');
  });

  it('recovery action 5 (RECOVER_IMEX_DOMAIN, NVML 13.3): a warning to restart the IMEX services, named in the message', () => {
    const r = classifyNvmlEvent(ev('gpu_recovery_action', { data: 5 }))!;
    expect([r.type, r.severity, r.action, r.key, r.fault].join(' ')).toBe('driver_error warning restart_app gpu2/recovery_action raise');
    expect(r.message).toBe('GPU 2: driver recovery action is now recover IMEX domain');
    expect(r.metrics).toEqual({ recovery_action: '5' });
    // An action beyond the table is reported without a guess.
    const u = classifyNvmlEvent(ev('gpu_recovery_action', { data: 6 }))!;
    expect([u.severity, u.action, u.fault, u.message].join(' ')).toBe('warning none none GPU 2: driver recovery action changed');
  });

  it('informational event types are not health events', () => {
    for (const t of ['pstate', 'clock', 'power_source', 'mig_config', 'unknown'] as const) expect(classifyNvmlEvent(ev(t))).toBeNull();
    expect(nvmlEventsToInputs([ev('pstate'), ev('xid', { data: 79 }), ev('clock')]).map((e) => e.key)).toEqual(['gpu2/xid/79']);
  });

  it('an event without a device index is node-level', () => {
    expect(classifyNvmlEvent(ev('xid', { data: 79, deviceIndex: -1, uuid: '' }))).toMatchObject({ gpuIndex: -1, key: 'node/xid/79' });
  });

  it('fake backend events classify like NVML ones (ECC counters move too)', async () => {
    const b = new FakeBackend({ count: 4 });
    await b.open();
    const got: NvmlEvent[] = [];
    const w = b.watch((batch) => got.push(...batch));
    b.inject({ kind: 'ecc', gpu: 1, dbe: 1 });
    await waitFor('ecc_dbe event', () => got.find((e) => e.type === 'ecc_dbe'));
    expect(nvmlEventsToInputs(got, { source: 'fake' })).toMatchObject([{ type: 'ecc_dbe', gpuIndex: 1, gpuUuid: b.devices()[1]!.uuid, source: 'fake' }]);
    const snap = await b.snapshot();
    expect(snap[1]!.ok && snap[1]!.telemetry.eccVolatileUncorrected).toBe(1);
    await w.stop();
    await b.close();
  });
});
