/**
 * Every fault class the agent raises, as Navarch's policies judge it (real CEL, src/devcp/policy.ts):
 * the events come from the agent's own producers (test/helpers/fault-classes.ts), go through
 * wire.ts / vocabulary.ts as pushed events and as re-sent active faults, and are evaluated with
 * Navarch's default policy and the shipped deploy/navarch/health-policy.yaml. The expected cells
 * are the table "Fault classes in Navarch's vocabulary" in docs/controlplane.md, parsed here, so
 * the doc and the code cannot drift apart.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { agentVerdict } from '../../src/controlplane/node-state.js';
import { eventToProto, eventTypeCelName, faultToProto, systemCelName } from '../../src/controlplane/wire.js';
import { evaluateEvent, loadPolicyFile } from '../../src/devcp/policy.js';
import { FAULT_CLASSES, faultClassOf } from '../../src/events/fault-class.js';
import type { Severity } from '../../src/events/types.js';
import { HealthStatus, type HealthEvent as PbEvent } from '../../src/gen/navarch/control_plane_pb.js';
import { activeFault, faultClassEvents, storedEvent, type FaultClassEvent } from '../helpers/fault-classes.js';

const shipped = loadPolicyFile(fileURLToPath(new URL('../../deploy/navarch/health-policy.yaml', import.meta.url)));
const DOC = readFileSync(fileURLToPath(new URL('../../docs/controlplane.md', import.meta.url)), 'utf8');
const RANK: Record<string, number> = { HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2 };
const BY_SEVERITY: Record<Severity, string> = { info: 'HEALTHY', warning: 'DEGRADED', critical: 'UNHEALTHY' };

interface Row {
  cls: string;
  severity: string;
  sentAs: string;
  metrics: string;
  dflt: string;
  shipped: string;
  agent: string;
}

/** The table under "### Fault classes in Navarch's vocabulary". */
function docRows(): Row[] {
  const at = DOC.indexOf("### Fault classes in Navarch's vocabulary");
  if (at < 0) throw new Error('docs/controlplane.md: no "Fault classes in Navarch\'s vocabulary" section');
  const lines = DOC.slice(at).split('\n');
  const first = lines.findIndex((l) => l.startsWith('| Fault class |'));
  const rows: Row[] = [];
  for (const l of lines.slice(first + 2)) {
    if (!l.startsWith('|')) break;
    const c = l
      .split('|')
      .slice(1, -1)
      .map((x) => x.trim());
    if (c.length !== 7) throw new Error(`docs/controlplane.md: a fault-class row with ${c.length} cells: ${l}`);
    const [cls, severity, sentAs, metrics, dflt, shippedCell, agent] = c as [string, string, string, string, string, string, string];
    rows.push({ cls, severity, sentAs, metrics, dflt, shipped: shippedCell, agent });
  }
  return rows;
}

const verdict = (pb: PbEvent, policy = undefined as ReturnType<typeof loadPolicyFile> | undefined) => {
  const v = policy ? evaluateEvent(pb, policy) : evaluateEvent(pb);
  return { status: HealthStatus[v.status] as string, rule: v.rule };
};

let classes: FaultClassEvent[];
beforeAll(async () => {
  classes = await faultClassEvents();
});

describe('fault classes in Navarch vocabulary (real CEL)', () => {
  it('the doc table lists exactly the fault classes the agent raises, in order', () => {
    expect(docRows().map((r) => r.cls)).toEqual(classes.map((c) => c.cls));
    expect(classes.length).toBeGreaterThanOrEqual(40);
  });

  it('every fault class of src/events/fault-class.ts has at least one row', () => {
    const covered = new Set(classes.map((c) => faultClassOf(c.input.key)));
    expect(Object.keys(FAULT_CLASSES).filter((c) => !covered.has(c))).toEqual([]);
    expect([...covered].filter((c) => !(c in FAULT_CLASSES))).toEqual([]);
  });

  it("each row's severity, wire form, metrics and three verdicts are what the code sends and the policies conclude", () => {
    const rows = new Map(docRows().map((r) => [r.cls, r]));
    for (const { cls, input } of classes) {
      const row = rows.get(cls)!;
      const pb = eventToProto(storedEvent(input));
      const d = verdict(pb);
      const sys = systemCelName(pb.system).replace(/^DCGM_HEALTH_WATCH_/, '');
      expect(row.severity, `${cls}: severity`).toBe(input.severity);
      expect(row.sentAs, `${cls}: event_type, system`).toBe(`${eventTypeCelName(pb.eventType)}, ${sys}`);
      for (const item of row.metrics
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)) {
        const [k, v] = item.split('=') as [string, string | undefined];
        expect(pb.metrics[k], `${cls}: metric ${k}`).toBe(v ?? pb.metrics[k]);
        expect(pb.metrics[k], `${cls}: metric ${k} present`).toBeDefined();
      }
      expect(row.dflt, `${cls}: default policy`).toBe(`${d.status} (${d.rule})`);
      expect(row.shipped, `${cls}: shipped policy`).toBe(verdict(pb, shipped).status);
      const agent = input.fault === 'raise' ? agentVerdict([activeFault(input)], input.timeMs).status.toUpperCase() : 'one-off';
      expect(row.agent, `${cls}: navarch_agent`).toBe(agent);
    }
  });

  it('a re-sent active fault (--verdict policy) is judged as its pushed event, by both policies', () => {
    let n = 0;
    for (const { cls, input } of classes) {
      if (input.fault !== 'raise') continue;
      const pushed = eventToProto(storedEvent(input));
      const resent = faultToProto(activeFault(input));
      expect([resent.eventType, resent.system], cls).toEqual([pushed.eventType, pushed.system]);
      expect(verdict(resent), cls).toEqual(verdict(pushed));
      expect(verdict(resent, shipped), cls).toEqual(verdict(pushed, shipped));
      n++;
    }
    expect(n).toBeGreaterThanOrEqual(30);
  });

  it("no class that is not an XID reads worse than the agent's severity under the default policy; the shipped policy always reads it", () => {
    for (const { cls, input } of classes) {
      const pb = eventToProto(storedEvent(input));
      expect(verdict(pb, shipped).status, cls).toBe(BY_SEVERITY[input.severity]);
      if (input.type === 'xid') continue; // Navarch's own judgement of its XID list, see the doc
      expect(RANK[verdict(pb).status]!, `${cls}: ${verdict(pb).status} vs ${input.severity}`).toBeLessThanOrEqual(RANK[BY_SEVERITY[input.severity]]!);
    }
  });

  it('the source metrics are kept, and a relabelled event names its own type and system', () => {
    for (const { cls, input } of classes) {
      const pb = eventToProto(storedEvent(input));
      for (const k of Object.keys(input.metrics)) expect(pb.metrics[k], `${cls}: ${k}`).toBeDefined();
      const type = eventTypeCelName(pb.eventType);
      const system = systemCelName(pb.system);
      if (type !== input.type || system !== `DCGM_HEALTH_WATCH_${input.system}`) {
        expect(pb.metrics, cls).toMatchObject({ agent_event_type: input.type, agent_system: `DCGM_HEALTH_WATCH_${input.system}` });
      } else {
        expect(pb.metrics.agent_event_type, cls).toBeUndefined();
      }
    }
  });

  it('critical classes the default policy can judge UNHEALTHY do read UNHEALTHY (memory and lost-GPU driver errors)', () => {
    const unhealthy = new Set(classes.filter((c) => verdict(eventToProto(storedEvent(c.input))).status === 'UNHEALTHY').map((c) => c.cls));
    for (const cls of [
      'row remapping failure',
      'DRAM retirement failure (NVML event)',
      'fatal poison (NVML event)',
      'fewer GPUs than the instance type',
      'kernel log: fallen off the bus',
      'kernel log: GSP error (XID 119/120)',
    ]) {
      expect(unhealthy.has(cls), cls).toBe(true);
    }
  });
});
