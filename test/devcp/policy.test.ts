/**
 * The development control plane's CEL policy evaluation (src/devcp/policy.ts, @bufbuild/cel) and
 * the server behaviour that goes with it: --health-policy, the always-on heartbeat monitor and the
 * always-set last_heartbeat.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/cli.js';
import { createControlPlaneClient } from '../../src/controlplane/client.js';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { evaluateEvent, evaluateEvents, eventToCelMap, loadPolicyFile, parsePolicy } from '../../src/devcp/policy.js';
import {
  HealthEventSchema,
  HealthEventType,
  HealthStatus,
  HealthWatchSystem,
  InstanceInfoSchema,
  type HealthEvent,
} from '../../src/gen/navarch/control_plane_pb.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-devcp-policy-'));
const open: DevControlPlane[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((cp) => cp.close()));
});

function ev(
  eventType: HealthEventType,
  system: HealthWatchSystem,
  metrics: Record<string, string>,
  extra: { gpuIndex?: number; gpuUuid?: string; message?: string; timestamp?: ReturnType<typeof timestampFromMs> } = {},
): HealthEvent {
  return create(HealthEventSchema, { eventType, system, metrics, gpuIndex: 0, ...extra });
}

describe('policy files', () => {
  it('rejects what Navarch rejects, with one line', () => {
    const bad: Array<[string, RegExp]> = [
      ['version: v1\n', /at least one rule/],
      ['rules: []\n', /at least one rule/],
      ['rules:\n  - condition: "true"\n    result: healthy\n', /rule 0: name is required/],
      [
        'rules:\n  - name: a\n    condition: "true"\n    result: healthy\n  - name: a\n    condition: "true"\n    result: healthy\n',
        /"a": duplicate rule name/,
      ],
      ['rules:\n  - name: a\n    result: healthy\n', /"a": condition is required/],
      ['rules:\n  - name: a\n    condition: "true"\n    result: broken\n', /invalid result "broken"/],
      ['rules:\n  - name: a\n    condition: "event.event_type =="\n    result: healthy\n', /compile rule "a"/],
      ['rules: [\n', /parse policy YAML/],
    ];
    for (const [text, re] of bad) {
      let msg = '';
      try {
        parsePolicy(text);
      } catch (err) {
        msg = (err as Error).message;
      }
      expect(msg, text).toMatch(re);
      expect(msg.split('\n')).toHaveLength(1);
    }
  });

  it('a rule that errors is skipped, a non-bool result is no match, the first true rule wins', () => {
    const p = parsePolicy(`
rules:
  - name: missing-key
    condition: event.metrics.nope > 1
    result: unhealthy
  - name: not-bool
    condition: event.gpu_index
    result: unhealthy
  - name: string-compare
    condition: event.metrics.temperature >= 95
    result: unhealthy
  - name: gpu-one
    condition: event.gpu_index == 1 && event.gpu_uuid == "GPU-x" && event.message.startsWith("hot")
    result: degraded
  - name: late
    condition: "true"
    result: unhealthy
`);
    expect(
      evaluateEvent(ev(HealthEventType.THERMAL, HealthWatchSystem.THERMAL, { temperature: 'hot' }, { gpuIndex: 1, gpuUuid: 'GPU-x', message: 'hot GPU' }), p),
    ).toEqual({
      rule: 'gpu-one',
      status: HealthStatus.DEGRADED,
    });
    expect(evaluateEvent(ev(HealthEventType.THERMAL, HealthWatchSystem.THERMAL, { temperature: '96' }), p).rule).toBe('string-compare');
  });

  it('builds the event map Navarch builds: typed metrics, enum names, RFC 3339 timestamp', () => {
    const m = eventToCelMap(
      ev(
        HealthEventType.ECC_DBE,
        HealthWatchSystem.MEM,
        { xid_code: '79', t: '95.5', ok: 'true', s: 'x' },
        { gpuIndex: -1, timestamp: timestampFromMs(1_700_000_000_123) },
      ),
    );
    expect(m.get('event_type')).toBe('ecc_dbe');
    expect(m.get('system')).toBe('DCGM_HEALTH_WATCH_MEM');
    expect(m.get('gpu_index')).toBe(-1n);
    expect(m.get('timestamp')).toBe('2023-11-14T22:13:20Z');
    expect(m.get('metrics')).toEqual(
      new Map<string, unknown>([
        ['xid_code', 79n],
        ['t', 95.5],
        ['ok', true],
        ['s', 'x'],
      ]),
    );
  });

  it('worst over the events; an all-healthy report names no rule (as Navarch)', () => {
    const fatal = ev(HealthEventType.XID, HealthWatchSystem.DRIVER, { xid_code: '79' });
    const warm = ev(HealthEventType.THERMAL, HealthWatchSystem.THERMAL, { temperature: '88' });
    const fine = ev(HealthEventType.DRIVER_ERROR, HealthWatchSystem.DRIVER, {});
    expect(evaluateEvents([warm, fatal, warm])).toEqual({ status: HealthStatus.UNHEALTHY, rule: 'fatal-xid' });
    expect(evaluateEvents([fine, warm])).toEqual({ status: HealthStatus.DEGRADED, rule: 'thermal-warning' });
    expect(evaluateEvents([fine, fine])).toEqual({ status: HealthStatus.HEALTHY, rule: '' });
    expect(evaluateEvents([])).toBeNull();
  });

  it('the dev server judges with a --health-policy file; a bad one exits 2 with one line', async () => {
    const good = join(dir, 'all-unhealthy.yaml');
    writeFileSync(good, 'rules:\n  - name: everything\n    condition: "true"\n    result: unhealthy\n');
    const cp = await startDevControlPlane({ healthPolicy: loadPolicyFile(good) });
    open.push(cp);
    const c = createControlPlaneClient({ url: cp.url, httpVersion: '1.1' }).rpc;
    await c.registerNode({ nodeId: 'n' });
    await c.reportHealth({ nodeId: 'n', events: [ev(HealthEventType.DRIVER_ERROR, HealthWatchSystem.DRIVER, {})] });
    expect(cp.node('n')).toMatchObject({ healthStatus: 'unhealthy', status: 'unhealthy' });

    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'rules:\n  - name: a\n    condition: "event.x ==="\n    result: healthy\n');
    for (const [path, re] of [
      [bad, /compile rule "a"/],
      [join(dir, 'missing.yaml'), /no such file/],
    ] as const) {
      let err = '';
      const code = await runCli(['control-plane', '--dev', '--port', '0', '--health-policy', path], { stdout: () => {}, stderr: (s) => (err += s), env: {} });
      expect(code).toBe(2);
      expect(err).toMatch(/^navarch-agent: control-plane: health policy /);
      expect(err).toMatch(re);
      expect(err.trimEnd().split('\n')).toHaveLength(1);
    }
  });
});

describe('dev server as the Go server', () => {
  it("InstanceInfo carries Navarch's field numbers 8-13", () => {
    const tag = (init: Parameters<typeof create<typeof InstanceInfoSchema>>[1]) => toBinary(InstanceInfoSchema, create(InstanceInfoSchema, init))[0]! >> 3;
    expect(tag({ createdAt: timestampFromMs(1000) })).toBe(8);
    expect(tag({ readyAt: timestampFromMs(1000) })).toBe(9);
    expect(tag({ terminatedAt: timestampFromMs(1000) })).toBe(10);
    expect(tag({ nodeId: 'n' })).toBe(11);
    expect(tag({ statusMessage: 'm' })).toBe(12);
    expect(tag({ labels: { a: 'b' } })).toBe(13);
  });

  it('last_heartbeat is always set (Go zero time before the first heartbeat)', async () => {
    const cp = await startDevControlPlane({});
    open.push(cp);
    const c = createControlPlaneClient({ url: cp.url, httpVersion: '1.1' }).rpc;
    await c.registerNode({ nodeId: 'n' });
    const before = await c.getNode({ nodeId: 'n' });
    expect(before.node!.lastHeartbeat).toBeDefined();
    expect(new Date(timestampMs(before.node!.lastHeartbeat!)).toISOString()).toBe('0001-01-01T00:00:00.000Z');
    await c.sendHeartbeat({ nodeId: 'n', timestamp: timestampFromMs(1_600_000_000_000) });
    expect(timestampMs((await c.getNode({ nodeId: 'n' })).node!.lastHeartbeat!)).toBe(1_600_000_000_000);
  });

  it('the heartbeat monitor is on by default at 3 x the heartbeat interval', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1 });
    open.push(cp);
    const c = createControlPlaneClient({ url: cp.url, httpVersion: '1.1' }).rpc;
    await c.registerNode({ nodeId: 'silent' });
    await c.registerNode({ nodeId: 'never' });
    await c.sendHeartbeat({ nodeId: 'silent' });
    const deadline = Date.now() + 30_000;
    while (cp.node('silent')!.status !== 'unhealthy' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(cp.node('silent')).toMatchObject({ status: 'unhealthy', healthStatus: 'unhealthy' });
    expect(cp.node('never')!.status).toBe('active');
  });
});
