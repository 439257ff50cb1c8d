/**
 * XID 63/64 where the GPU reports row remapping through its counters (src/xid/row-remap.ts): no
 * fault there, as gpud; kept where the counters are not supported or not known.
 */
import { describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/backends/fake.js';
import type { Telemetry } from '../../src/nvml/types.js';
import { xidEventInput } from '../../src/xid/catalog.js';
import { ROW_REMAP_XIDS, judgedByRowRemapCounters, reportsRowRemapping } from '../../src/xid/row-remap.js';

async function telemetryOf(model: string): Promise<Telemetry> {
  const b = new FakeBackend({ count: 1, model });
  await b.open();
  const [s] = await b.snapshot();
  await b.close();
  if (!s?.ok) throw new Error('fake sample failed');
  return s.telemetry;
}

const xid = (code: number) =>
  xidEventInput({
    code,
    gpuIndex: 0,
    gpuUuid: 'GPU-x',
    timeMs: 1,
    source: 'kmsg',
    message: 'Row Remapper: New row marked for remapping, reset gpu to activate.',
  });

describe('XID 63/64 and the remapped-rows counters', () => {
  it('are the two codes, and the catalog alone raises both', () => {
    expect([...ROW_REMAP_XIDS]).toEqual([63, 64]);
    expect(xid(63)).toMatchObject({ fault: 'raise', severity: 'warning', action: 'reset_gpu' });
    expect(xid(64)).toMatchObject({ fault: 'raise', severity: 'critical', action: 'replace' });
  });

  it('raise nothing on a GPU that reports row remapping (H100, A100)', async () => {
    for (const model of ['NVIDIA H100 80GB HBM3', 'NVIDIA A100-SXM4-80GB']) {
      const t = await telemetryOf(model);
      expect(t.remappedRowsCorrected).not.toBeNull();
      expect(reportsRowRemapping(t)).toBe(true);
      expect(judgedByRowRemapCounters(xid(63), t)).toBe(true);
      expect(judgedByRowRemapCounters(xid(64), t)).toBe(true);
      // Every other XID still goes through.
      for (const c of [48, 79, 92, 94, 95, 140]) expect(judgedByRowRemapCounters(xid(c), t)).toBe(false);
    }
  });

  it('are kept on a GPU without row remapping (V100, T4: page retirement, counters NOT_SUPPORTED)', async () => {
    for (const model of ['Tesla V100-SXM2-16GB', 'Tesla T4']) {
      const t = await telemetryOf(model);
      expect(t.remappedRowsCorrected).toBeNull();
      expect(t.retiredPagesDbe).not.toBeNull();
      expect(reportsRowRemapping(t)).toBe(false);
      expect(judgedByRowRemapCounters(xid(63), t)).toBe(false);
      expect(judgedByRowRemapCounters(xid(64), t)).toBe(false);
    }
  });

  it('are kept while the counters are not known (no sample yet, a failed sample)', () => {
    expect(judgedByRowRemapCounters(xid(63), null)).toBe(false);
    expect(judgedByRowRemapCounters(xid(64), undefined)).toBe(false);
  });

  it('one counter reported is enough; a non-XID event with code 63 in its metrics is not touched', async () => {
    const t = await telemetryOf('Tesla V100-SXM2-16GB');
    expect(reportsRowRemapping({ ...t, remappedRowsPending: false })).toBe(true);
    const h100 = await telemetryOf('NVIDIA H100 80GB HBM3');
    expect(judgedByRowRemapCounters({ ...xid(63), type: 'memory' }, h100)).toBe(false);
  });
});
