/**
 * Reboot-aware escalation, the pure logic (src/xid/reboot-escalation.ts): boots and the clock are
 * arguments, so "reboots" here are new boot ids.
 */
import { describe, expect, it } from 'vitest';
import type { HealthEventInput } from '../../src/events/types.js';
import { FILE_LIMITS } from '../../src/util/bounded-file.js';
import { xidEventInput } from '../../src/xid/catalog.js';
import {
  LOOKBACK_MS,
  MAX_BOOTS,
  MAX_ENTRIES,
  MAX_SEEN,
  NEVER_ESCALATES,
  REBOOT_THRESHOLD,
  RebootHistory,
  emptyHistory,
  entryId,
  parseHistory,
  trackedXid,
  type FaultHistoryData,
} from '../../src/xid/reboot-escalation.js';

const T0 = 1_780_000_000_000;
const HOUR = 3600_000;
const uuid = (i: number) => `GPU-0000000${i}-aaaa-bbbb-cccc-ddddeeeeffff`;
const xid = (code: number, gpu = 0, u = uuid(gpu)): HealthEventInput => xidEventInput({ code, gpuIndex: gpu, gpuUuid: u, timeMs: T0, source: 'kmsg' });

/** Run one boot: a new RebootHistory over the previous one's data, then `inputs` observed. */
function boot(data: FaultHistoryData, bootId: string, now: number, inputs: HealthEventInput[] = []) {
  const h = new RebootHistory(data, bootId, now);
  const out = inputs.map((i) => h.observe(i, now));
  return { h, out, data: h.toJSON() };
}

describe('reboot-aware escalation', () => {
  it("uses gpud's threshold and exception", () => {
    expect(REBOOT_THRESHOLD).toBe(2);
    expect([...NEVER_ESCALATES.keys()]).toEqual([94]);
    expect(LOOKBACK_MS).toBe(3 * 24 * HOUR);
  });

  it('an XID a reboot should cure escalates to replace when it comes back after 2 reboots', () => {
    const a = boot(emptyHistory(), 'boot-a', T0, [xid(79)]);
    expect(a.out[0]?.escalation).toBeNull();
    expect(a.out[0]?.input.action).toBe('reboot');
    expect(a.out[0]?.changed).toBe(true);
    const b = boot(a.data, 'boot-b', T0 + HOUR, [xid(79)]);
    expect(b.h.newBoot).toBe(true);
    expect(b.out[0]?.escalation).toBeNull();
    expect(b.out[0]?.input.severity).toBe('critical');
    expect(b.out[0]?.input.action).toBe('reboot');
    const c = boot(b.data, 'boot-c', T0 + 2 * HOUR, [xid(79), xid(79)]);
    const e = c.out[0]?.input as HealthEventInput;
    expect(c.out[0]?.escalation).toEqual({ rebootsSinceFirst: 2, bootsSeen: 3, firstSeenMs: T0, from: 'reboot' });
    expect(e).toMatchObject({ severity: 'critical', action: 'replace', key: 'gpu0/xid/79', fault: 'raise', gpuIndex: 0 });
    expect(e.metrics).toMatchObject({
      xid_code: '79',
      reboot_escalated: 'true',
      reboots_since_first: '2',
      boots_seen: '3',
      first_seen_ms: String(T0),
      escalated_from: 'reboot',
      reboot_threshold: '2',
    });
    expect(e.message).toMatch(/^XID 79 came back after 2 reboots \(3 boots with it\): replace the GPU\. XID 79/);
    expect(e.citation).toMatch(/escalated to replace: recurred after 2 reboots/);
    // The second occurrence in the same boot is escalated too, and is not a change worth a write.
    expect(c.out[1]?.input.action).toBe('replace');
    expect(c.out[1]?.changed).toBe(false);
  });

  it('counts every reboot since the first occurrence, seen in between or not (as gpud)', () => {
    const a = boot(emptyHistory(), 'a', T0, [xid(48)]);
    const b = boot(a.data, 'b', T0 + HOUR);
    const c = boot(b.data, 'c', T0 + 2 * HOUR, [xid(48)]);
    expect(c.out[0]?.escalation).toMatchObject({ rebootsSinceFirst: 2, bootsSeen: 2, from: 'reset_gpu' });
    expect(c.out[0]?.input.action).toBe('replace');
  });

  it('a restart of the agent in the same boot is not a reboot', () => {
    let d = boot(emptyHistory(), 'a', T0, [xid(79)]).data;
    for (let i = 1; i <= 5; i++) d = boot(d, 'a', T0 + i * HOUR, [xid(79)]).data;
    const again = boot(d, 'a', T0 + 6 * HOUR, [xid(79)]);
    expect(again.h.newBoot).toBe(false);
    expect(again.out[0]?.escalation).toBeNull();
    expect(again.data.boots).toHaveLength(1);
  });

  it('XID 94 never escalates, even where its action is made a reset', () => {
    expect(xid(94).action).toBe('restart_app');
    const as = (i: HealthEventInput): HealthEventInput => ({ ...i, action: 'reset_gpu', fault: 'raise' });
    expect(trackedXid(as(xid(94)))).toBeNull();
    let d = emptyHistory();
    let last = null;
    for (const id of ['a', 'b', 'c', 'd']) {
      const r = boot(d, id, T0, [as(xid(94))]);
      d = r.data;
      last = r.out[0];
    }
    expect(last?.escalation).toBeNull();
    expect(last?.input.action).toBe('reset_gpu');
    expect(d.entries).toHaveLength(0);
  });

  it('tracks only raised XIDs whose action a reset or reboot cures', () => {
    expect(trackedXid(xid(79))).toBe(79); // RESTART_BM: reboot
    expect(trackedXid(xid(48))).toBe(48); // reset_gpu
    expect(trackedXid(xid(13))).toBeNull(); // restart_app, no fault
    expect(trackedXid(xid(64))).toBeNull(); // already replace
    expect(trackedXid({ ...xid(79), type: 'thermal' })).toBeNull();
    let d = emptyHistory();
    for (const id of ['a', 'b', 'c']) d = boot(d, id, T0, [xid(13), xid(64)]).data;
    expect(d.entries).toHaveLength(0);
  });

  it('counts per GPU (by UUID, so a renumbered GPU keeps its history)', () => {
    const a = boot(emptyHistory(), 'a', T0, [xid(79, 0)]);
    const b = boot(a.data, 'b', T0 + HOUR, [xid(79, 1)]);
    // Boot c: GPU 0's UUID now has index 3; GPU 1 has seen one reboot only.
    const c = boot(b.data, 'c', T0 + 2 * HOUR, [xid(79, 3, uuid(0)), xid(79, 1)]);
    expect(c.out[0]?.input.action).toBe('replace');
    expect(c.out[0]?.input.key).toBe('gpu3/xid/79');
    expect(c.out[1]?.input.action).toBe('reboot');
  });

  it('without a UUID the event key is the identity: two unresolved PCI ids are two faults', () => {
    const onPci = (pci: string): HealthEventInput => ({ ...xid(79, -1, ''), key: `pci/${pci}/xid/79` });
    expect(entryId(xid(79, 3, ''), 79)).toBe('gpu3/xid/79');
    expect(entryId(onPci('0000:41:00'), 79)).toBe('pci/0000:41:00/xid/79');
    const a = boot(emptyHistory(), 'a', T0, [onPci('0000:41:00')]);
    const b = boot(a.data, 'b', T0 + HOUR, [onPci('0000:41:00')]);
    const c = boot(b.data, 'c', T0 + 2 * HOUR, [onPci('0000:52:00'), onPci('0000:41:00')]);
    expect(c.out.map((o) => o.input.action)).toEqual(['reboot', 'replace']);
  });

  it('an occurrence older than the look-back window no longer counts', () => {
    const a = boot(emptyHistory(), 'a', T0, [xid(79)]);
    const b = boot(a.data, 'b', T0 + LOOKBACK_MS - HOUR);
    const c = boot(b.data, 'c', T0 + LOOKBACK_MS + HOUR, [xid(79)]);
    expect(c.out[0]?.escalation).toBeNull();
    expect(c.data.entries[0]?.seen).toEqual([{ n: 3, first: T0 + LOOKBACK_MS + HOUR, last: T0 + LOOKBACK_MS + HOUR }]);
    // ... but one that lasted into the window does (its last occurrence is what ages).
    const a2 = new RebootHistory(emptyHistory(), 'a', T0);
    a2.observe(xid(79), T0);
    a2.observe(xid(79), T0 + 2 * 24 * HOUR);
    const c2 = boot(boot(a2.toJSON(), 'b', T0 + 2 * 24 * HOUR + HOUR).data, 'c', T0 + LOOKBACK_MS + HOUR, [xid(79)]);
    expect(c2.out[0]?.escalation?.rebootsSinceFirst).toBe(2);
  });

  it('forgetKey starts the count again (an operator cleared the fault)', () => {
    const b = boot(boot(emptyHistory(), 'a', T0, [xid(79)]).data, 'b', T0 + HOUR, [xid(79)]);
    expect(b.h.forgetKey('gpu0/xid/79')).toBe(true);
    expect(b.h.forgetKey('gpu0/xid/79')).toBe(false);
    const c = boot(b.h.toJSON(), 'c', T0 + 2 * HOUR, [xid(79)]);
    expect(c.out[0]?.escalation).toBeNull();
  });

  it('an unknown boot id disables escalation', () => {
    let d = emptyHistory();
    let last = null;
    for (let i = 0; i < 4; i++) {
      const h = new RebootHistory(d, null, T0 + i * HOUR);
      last = h.observe(xid(79), T0 + i * HOUR);
      d = h.toJSON();
    }
    expect(last?.escalation).toBeNull();
    expect(d.boots).toHaveLength(0);
    expect(d.entries).toHaveLength(0);
  });

  it('stays bounded: boots, boots per fault, faults, and bytes', () => {
    let d = emptyHistory();
    // 40 boots, each with 8 GPUs x 20 codes of long UUIDs: far more than the bounds.
    const codes = [48, 74, 79, 95, 119, 120, 140, 62, 38, 142, 32, 69, 68, 110, 136, 143, 155, 156, 158, 119];
    for (let b = 0; b < 40; b++) {
      const inputs: HealthEventInput[] = [];
      for (let g = 0; g < 8; g++) for (const c of codes) inputs.push(xid(c, g, `GPU-${'f'.repeat(60)}-${g}`));
      d = boot(d, `boot-${b}-${'x'.repeat(28)}`, T0 + b * HOUR, inputs).data;
    }
    expect(d.boots).toHaveLength(MAX_BOOTS);
    expect(d.boots[MAX_BOOTS - 1]?.n).toBe(40);
    expect(d.entries.length).toBeLessThanOrEqual(MAX_ENTRIES);
    for (const e of d.entries) expect(e.seen.length).toBeLessThanOrEqual(MAX_SEEN);
    const bytes = Buffer.byteLength(JSON.stringify(d));
    expect(bytes).toBeLessThan(FILE_LIMITS.state);
    // And it reads back as written.
    expect(parseHistory(JSON.stringify(d))).toEqual(d);
  });

  it('parseHistory rejects what it did not write, with a one-line reason', () => {
    expect(() => parseHistory('{"v":1,"boots":[')).toThrow('not JSON');
    expect(() => parseHistory('[]')).toThrow('not an object');
    expect(() => parseHistory('{"v":2,"boots":[],"entries":[]}')).toThrow('unknown version 2');
    expect(() => parseHistory('{"v":1,"boots":[{"n":2,"id":"a","ms":1},{"n":1,"id":"b","ms":2}],"entries":[]}')).toThrow('boots out of order');
    expect(() => parseHistory('{"v":1,"boots":[],"entries":[{"id":"x","key":"k","xid":79,"seen":[]}]}')).toThrow('bad entry');
    expect(() => parseHistory('{"v":1,"boots":[],"entries":[{"id":"x","key":"k","xid":79,"seen":[{"n":1,"first":5,"last":4}]}]}')).toThrow('bad entry');
    expect(parseHistory('{"v":1,"boots":[],"entries":[]}')).toEqual(emptyHistory());
  });
});
