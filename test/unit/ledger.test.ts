/**
 * The ledger alone (src/store/ledger.ts: no I/O): coalescing with exact counts, the visibility
 * rule (pending() lists an event only once its batch is revealed), shedding order, faults, and
 * the journal-less MemoryEventStore built on it.
 */
import { describe, expect, it } from 'vitest';
import type { HealthEventInput, Severity } from '../../src/events/types.js';
import { EventLedger } from '../../src/store/ledger.js';
import { MemoryEventStore } from '../../src/store/memory-store.js';
import { decodeLog } from '../../src/store/log-format.js';
import { validateRecord, type LogRecord } from '../../src/store/records.js';

function input(over: Partial<HealthEventInput> = {}): HealthEventInput {
  return {
    type: 'xid',
    system: 'DRIVER',
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics: {},
    message: 'm',
    timeMs: 1000,
    severity: 'warning',
    action: 'none',
    citation: 't',
    source: 'kmsg',
    key: 'gpu0/xid/13',
    fault: 'none',
    ...over,
  };
}

describe('EventLedger', () => {
  it('an event is listed by pending() only once the batch that first writes it is revealed', () => {
    const l = new EventLedger({ bootId: 'b' });
    const a = l.append(input());
    expect(l.pending()).toEqual([]);
    expect(l.pendingCount()).toBe(1);
    const no = l.startBatch();
    const b = l.append(input({ key: 'other' })); // after the batch started: the next one writes it
    l.reveal(no);
    expect(l.pending().map((e) => e.id)).toEqual([a.event.id]);
    l.reveal(l.startBatch());
    expect(l.pending().map((e) => e.id)).toEqual([a.event.id, b.event.id]);
  });

  it('coalesces a storm with exact counts and sheds info before warning, never critical', () => {
    const l = new EventLedger({ bootId: 'b', maxEvents: 3 });
    for (let i = 0; i < 1000; i++) l.append(input({ timeMs: 1000 + i }));
    l.reveal(l.startBatch());
    expect(l.pending().map((e) => e.count)).toEqual([1000]);
    const add = (key: string, severity: Severity) => l.append(input({ key, severity }));
    add('i1', 'info');
    add('c1', 'critical');
    expect(add('c2', 'critical').shed).toBeUndefined();
    expect(l.counters.shedBySeverity).toEqual({ info: 1, warning: 0, critical: 0 });
    add('c3', 'critical');
    expect(l.counters.shedBySeverity).toEqual({ info: 1, warning: 1, critical: 0 });
    expect(add('i2', 'info').shed).toBe(true);
  });

  it('the dirty set encodes to records the load-time validation accepts, and a snapshot replays to the same state', () => {
    const l = new EventLedger({ bootId: 'b' });
    l.append(input({ key: 'gpu1/xid/79', severity: 'critical', action: 'reboot', fault: 'raise', metrics: { xid_code: '79' } }));
    l.append(input({ key: 'gpu1/xid/79', severity: 'critical', action: 'reboot', fault: 'raise', source: 'nvml', timeMs: 50_000 }));
    const lines = decodeLog(l.encodeDirty(l.takeDirty())).records;
    expect(lines.map((r) => validateRecord(r))).toEqual([null, null]);
    const copy = new EventLedger({ bootId: 'b' });
    for (const r of decodeLog(l.encodeSnapshot()).records) {
      expect(validateRecord(r)).toBeNull();
      copy.replay(r as LogRecord);
    }
    copy.finishReplay();
    l.reveal(l.startBatch());
    expect(copy.pending()).toEqual(l.pending());
    expect(copy.activeFaults()).toEqual(l.activeFaults());
    expect(copy.activeFaults()[0]?.count).toBe(2);
  });
});

describe('MemoryEventStore (the ledger without a journal)', () => {
  it('behaves like the durable store: coalescing, remainders on ack, faults, onPending', async () => {
    const s = new MemoryEventStore();
    let woke = 0;
    s.onPending(() => woke++);
    await s.append(input({ fault: 'raise', severity: 'critical', action: 'reboot' }));
    const sent = s.pending();
    await s.append(input({ fault: 'raise', severity: 'critical', action: 'reboot', timeMs: 2000 }));
    expect(woke).toBe(2);
    await s.ack(sent);
    expect(s.pending().map((e) => e.count)).toEqual([1]);
    expect(s.activeFaults().map((f) => [f.key, f.count])).toEqual([['gpu0/xid/13', 2]]);
    await expect(s.append(input({ key: '' }))).rejects.toThrow(/key must be a non-empty string/);
  });
});
