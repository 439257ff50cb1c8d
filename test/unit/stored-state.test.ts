/**
 * readStoredState (src/store/event-store.ts): the backlog (stored, not acknowledged) and the
 * active faults read from the log without opening the store; storeHolderPid (src/store/lock.ts):
 * the live holder of a store, null once it closed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { HealthEventInput } from '../../src/events/types.js';
import { openEventStore, readStoredState } from '../../src/store/event-store.js';
import { storeHolderPid } from '../../src/store/lock.js';

function input(over: Partial<HealthEventInput>): HealthEventInput {
  return {
    type: 'xid',
    system: 'DRIVER',
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics: { xid_code: '48' },
    message: 'dbe',
    timeMs: 1_000,
    severity: 'critical',
    action: 'reboot',
    citation: 'test',
    source: 'fake',
    key: 'gpu0/xid/48',
    fault: 'raise',
    ...over,
  };
}

describe('readStoredState', () => {
  it('counts the events not yet acknowledged, the oldest first, beside the open store and after it closed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'navarch-stored-state-'));
    expect(await readStoredState(path.join(dir, 'none'))).toEqual({ exists: false, activeFaults: [], pending: 0, oldestPendingMs: null });
    const s = await openEventStore({ dir, fsync: true, bootId: 'boot-a' });
    expect(storeHolderPid(dir)).toBe(null); // this very process: never reported as "another agent"
    const a = await s.append(input({ timeMs: 5_000 }));
    await s.append(input({ key: 'gpu1/xid/79', gpuIndex: 1, metrics: { xid_code: '79' }, timeMs: 7_000 }));
    await s.append(input({ key: 'gpu2/thermal', gpuIndex: 2, type: 'thermal', severity: 'warning', action: 'none', timeMs: 3_000, fault: 'none' }));
    const open = await readStoredState(dir, { bootId: 'boot-a' });
    expect(open).toMatchObject({ exists: true, pending: 3, oldestPendingMs: 3_000 });
    expect(open.activeFaults.map((f) => f.key).sort()).toEqual(['gpu0/xid/48', 'gpu1/xid/79']);
    await s.ack([{ id: a.event.id, count: 1 }]);
    await s.close();
    const closed = await readStoredState(dir, { bootId: 'boot-a' });
    expect(closed).toMatchObject({ exists: true, pending: 2, oldestPendingMs: 3_000 });
    // acknowledged is not cleared: the fault stays active
    expect(closed.activeFaults.map((f) => f.key).sort()).toEqual(['gpu0/xid/48', 'gpu1/xid/79']);
    expect(storeHolderPid(dir)).toBe(null);
  });
});
