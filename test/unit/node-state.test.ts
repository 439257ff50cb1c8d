import { describe, expect, it } from 'vitest';
import type { ActiveFault } from '../../src/events/types.js';
import { AGENT_VERDICT_CHECK, agentVerdict, judgedFaults, wholeState } from '../../src/controlplane/node-state.js';

function fault(key: string, severity: ActiveFault['severity'], lastSeenMs = 1000): ActiveFault {
  return {
    key,
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    type: 'xid',
    system: 'DRIVER',
    severity,
    action: 'none',
    message: `${key} active`,
    metrics: {},
    sinceMs: 500,
    lastSeenMs,
    count: 1,
    lastEventId: `id-${key}`,
  };
}

describe('agentVerdict', () => {
  it('is UNHEALTHY while any critical fault is active, whatever else is active', () => {
    const r = agentVerdict([fault('gpu0/thermal', 'warning'), fault('gpu3/xid/79', 'critical')], 5);
    expect(r).toMatchObject({ name: AGENT_VERDICT_CHECK, status: 'unhealthy', timeMs: 5 });
    expect(r.message).toBe('1 active critical fault(s): gpu3/xid/79');
    expect(r.details).toMatchObject({ critical: '1', warning: '1', 'fault.gpu3/xid/79': 'critical: gpu3/xid/79 active' });
  });

  it('is DEGRADED for warnings only and HEALTHY once everything cleared (info faults do not judge)', () => {
    expect(agentVerdict([fault('gpu0/thermal', 'warning')], 0).status).toBe('degraded');
    expect(agentVerdict([fault('gpu0/note', 'info')], 0).status).toBe('healthy');
    expect(agentVerdict([], 0)).toMatchObject({ status: 'healthy', details: { critical: '0', warning: '0' } });
  });

  it('lists at most cap fault keys and counts the rest', () => {
    const many = Array.from({ length: 300 }, (_, i) => fault(`gpu${i % 8}/f/${i}`, i % 2 ? 'warning' : 'critical', i));
    const r = agentVerdict(many, 0, 64);
    expect(r.status).toBe('unhealthy');
    expect(r.details).toMatchObject({ critical: '150', warning: '150', omitted: '236' });
    expect(Object.keys(r.details!).filter((k) => k.startsWith('fault.'))).toHaveLength(64);
    expect(r.message.endsWith(', ...')).toBe(true);
  });
});

describe('wholeState', () => {
  const faults = [fault('a', 'warning', 9), fault('b', 'critical', 1), fault('c', 'critical', 5), fault('d', 'info', 9)];

  it('agent mode: one navarch_agent result, no events re-sent', () => {
    const s = wholeState('agent', faults, 0);
    expect(s.results.map((r) => [r.name, r.status])).toEqual([[AGENT_VERDICT_CHECK, 'unhealthy']]);
    expect(s.faults).toEqual([]);
  });

  it('policy mode: no result; critical first, newest first, capped, skipping keys already in the report', () => {
    expect(judgedFaults(faults).map((f) => f.key)).toEqual(['c', 'b', 'a']);
    const s = wholeState('policy', faults, 0, { cap: 2, skipKeys: new Set(['c']) });
    expect(s.results).toEqual([]);
    expect(s.faults.map((f) => f.key)).toEqual(['b', 'a']);
    expect(s.omitted).toBe(0);
    expect(wholeState('policy', faults, 0, { cap: 1 })).toMatchObject({ omitted: 2 });
  });
});
