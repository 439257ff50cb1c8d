import { describe, expect, it } from 'vitest';
import type { HealthEventInput } from '../../src/events/types.js';
import { KmsgBatch, MAX_BATCH_RECORDS } from '../../src/sources/kmsg-batch.js';
import { xidEventInput } from '../../src/xid/catalog.js';

const xid = (code: number, gpuIndex = 0, extra: Record<string, string> = {}): HealthEventInput => {
  const e = xidEventInput({ code, gpuIndex, gpuUuid: `GPU-${gpuIndex}`, timeMs: 1000 + code, source: 'kmsg', message: `xid ${code}` });
  Object.assign(e.metrics, extra);
  return e;
};

describe('KmsgBatch (pure coalescing of one read-ahead batch)', () => {
  it('a storm of one key becomes one event with the exact count; a fatal XID among it keeps its own key', () => {
    const b = new KmsgBatch();
    for (let i = 0; i < 5000; i++) b.add(BigInt(i + 1), [i === 2500 ? xid(79) : xid(13)]);
    const { events, lastSeq, records } = b.take();
    expect(records).toBe(5000);
    expect(lastSeq).toBe(5000n);
    expect(events.map((g) => [g.event.key, g.event.count, g.firstSeq])).toEqual([
      ['gpu0/xid/13', 4999, 1n],
      ['gpu0/xid/79', 1, 2501n],
    ]);
    expect(events[0]?.event.metrics.kmsg_seq_last).toBe('5000');
    expect(events[1]?.event.severity).toBe('critical');
    expect(b.size).toBe(0);
    expect(b.take().events).toEqual([]);
  });

  it('keeps keys, GPUs and replayed/live apart, adds given counts, and does not change the inputs', () => {
    const b = new KmsgBatch();
    const first = xid(13, 1);
    b.add(1n, [first]);
    b.add(2n, [xid(13, 2)]);
    b.add(3n, [{ ...xid(13, 1), count: 5 }]);
    b.add(4n, [xid(13, 1, { replayed: 'true' })]);
    b.add(5n, []);
    const { events, lastSeq, records } = b.take();
    expect(records).toBe(5);
    expect(lastSeq).toBe(5n);
    expect(events.map((g) => [g.event.key, g.event.count, g.event.metrics.replayed])).toEqual([
      ['gpu1/xid/13', 6, undefined],
      ['gpu2/xid/13', 1, undefined],
      ['gpu1/xid/13', 1, 'true'],
    ]);
    expect(first.count).toBeUndefined();
    expect(first.metrics.kmsg_seq_last).toBeUndefined();
  });

  it('a merged event carries its newest occurrence: time, message and detail (the fault is last seen then)', () => {
    const b = new KmsgBatch();
    b.add(7n, [xidEventInput({ code: 79, gpuIndex: 1, gpuUuid: 'GPU-1', timeMs: 1_000, source: 'kmsg', message: 'old', pid: 1 })]);
    b.add(9n, [xidEventInput({ code: 79, gpuIndex: 1, gpuUuid: 'GPU-1', timeMs: 5_000, source: 'kmsg', message: 'new', pid: 2 })]);
    const [g] = b.take().events;
    expect(g!.event).toMatchObject({ count: 2, timeMs: 5_000 });
    expect(g!.event.message).toContain('new');
    expect(g!.event.metrics).toMatchObject({ pid: '2', kmsg_seq_first: '7', kmsg_seq_last: '9' });
    expect(g!.firstSeq).toBe(7n);
  });

  it('is full at MAX_BATCH_RECORDS records (bounded memory)', () => {
    const b = new KmsgBatch();
    for (let i = 0; i < MAX_BATCH_RECORDS - 1; i++) b.add(BigInt(i), []);
    expect(b.full).toBe(false);
    b.add(BigInt(MAX_BATCH_RECORDS), []);
    expect(b.full).toBe(true);
  });
});
