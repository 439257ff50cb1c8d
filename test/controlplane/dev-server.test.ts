/**
 * The development control plane over real HTTP on loopback: protocols (Connect binary/JSON over
 * HTTP/1.1 and h2c, gRPC over h2c, gRPC-Web), auth exactly like Navarch, error codes, the
 * default policy's outcome rules, sticky UNHEALTHY, command queueing and admin RPCs.
 */
import { PassThrough } from 'node:stream';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { afterEach, describe, expect, it } from 'vitest';
import { createControlPlaneClient, type ControlPlaneRpc } from '../../src/controlplane/client.js';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import {
  ControlPlaneService,
  HealthEventSchema,
  HealthEventType,
  HealthStatus,
  HealthWatchSystem,
  NodeCommandType,
  NodeStatus,
  type HealthEvent,
} from '../../src/gen/navarch/control_plane_pb.js';
import { evaluateEvent, parseMetricValue } from '../../src/devcp/policy.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function devCp(opts: Parameters<typeof startDevControlPlane>[0] = {}): Promise<DevControlPlane> {
  const cp = await startDevControlPlane(opts);
  cleanups.push(() => cp.close());
  return cp;
}

function rpc(url: string, httpVersion: '1.1' | '2' = '1.1', token?: string): ControlPlaneRpc {
  const c = createControlPlaneClient({ url, httpVersion, timeoutMs: 5000, ...(token ? { token } : {}) });
  cleanups.push(() => c.close());
  return c.rpc;
}

function ev(type: HealthEventType, system: HealthWatchSystem, metrics: Record<string, string>): HealthEvent {
  return create(HealthEventSchema, { gpuIndex: 0, eventType: type, system, metrics, timestamp: timestampFromMs(Date.now()) });
}

async function codeOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e).code;
  }
  throw new Error('expected a failure');
}

describe('protocols', () => {
  it('serves Connect over HTTP/1.1 and h2c, gRPC over h2c and gRPC-Web on one port', async () => {
    const cp = await devCp({ heartbeatIntervalSeconds: 7, healthCheckIntervalSeconds: 11 });
    const r1 = await rpc(cp.url, '1.1').registerNode({ nodeId: 'h1' });
    expect(r1.success).toBe(true);
    expect(r1.message).toBe('registration successful');
    expect(r1.config?.heartbeatIntervalSeconds).toBe(7);
    expect(r1.config?.healthCheckIntervalSeconds).toBe(11);
    expect(r1.config?.enabledHealthChecks).toEqual(['boot', 'nvml', 'xid']);
    expect((await rpc(cp.url, '2').registerNode({ nodeId: 'h2c' })).success).toBe(true);
    const grpc = createGrpcTransport({ baseUrl: cp.url });
    expect((await createClient(ControlPlaneService, grpc).registerNode({ nodeId: 'grpc' })).success).toBe(true);
    const grpcWeb = createGrpcWebTransport({ baseUrl: cp.url, httpVersion: '1.1' });
    expect((await createClient(ControlPlaneService, grpcWeb).registerNode({ nodeId: 'grpc-web' })).success).toBe(true);
    expect(
      cp
        .nodes()
        .map((n) => n.nodeId)
        .sort(),
    ).toEqual(['grpc', 'grpc-web', 'h1', 'h2c']);
  });

  it("answers Navarch's JSON smoke test and exposes /healthz", async () => {
    const cp = await devCp();
    const res = await fetch(`${cp.url}/navarch.ControlPlaneService/RegisterNode`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nodeId: 'n1', metadata: { labels: { pool: 'p' } } }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      success: true,
      message: 'registration successful',
      config: { healthCheckIntervalSeconds: 60, heartbeatIntervalSeconds: 30, enabledHealthChecks: ['boot', 'nvml', 'xid'] },
    });
    const h = await fetch(`${cp.url}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.text()).toBe('ok\n');
  });

  it('with a token: HTTP 401, WWW-Authenticate, "unauthorized\\n" before connect runs; health endpoints exempt', async () => {
    const cp = await devCp({ authToken: 'tok' });
    for (const auth of [undefined, 'Bearer nope', 'bearer tok', 'Bearer  tok', 'tok']) {
      const res = await fetch(`${cp.url}/navarch.ControlPlaneService/RegisterNode`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
        body: '{"nodeId":"x"}',
      });
      expect(res.status, String(auth)).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="navarch"');
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await res.text()).toBe('unauthorized\n');
    }
    expect(cp.nodes()).toHaveLength(0);
    expect(await codeOf(rpc(cp.url).registerNode({ nodeId: 'x' }))).toBe(Code.Unauthenticated);
    expect(await codeOf(rpc(cp.url, '2', 'wrong').registerNode({ nodeId: 'x' }))).toBe(Code.Unauthenticated);
    expect((await rpc(cp.url, '1.1', 'tok').registerNode({ nodeId: 'x' })).success).toBe(true);
    expect((await fetch(`${cp.url}/healthz`)).status).toBe(200);
  });

  it('error codes as Navarch: InvalidArgument for an empty node_id, NotFound for unknown nodes', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    expect(await codeOf(c.registerNode({ nodeId: '' }))).toBe(Code.InvalidArgument);
    expect(await codeOf(c.reportHealth({ nodeId: '' }))).toBe(Code.InvalidArgument);
    expect(await codeOf(c.reportHealth({ nodeId: 'ghost' }))).toBe(Code.NotFound);
    expect(await codeOf(c.sendHeartbeat({ nodeId: 'ghost' }))).toBe(Code.NotFound);
    expect(await codeOf(c.getNodeCommands({ nodeId: '' }))).toBe(Code.InvalidArgument);
    // GetNodeCommands does not check registration.
    expect((await c.getNodeCommands({ nodeId: 'ghost' })).commands).toEqual([]);
    const res = await fetch(`${cp.url}/navarch.ControlPlaneService/ReportHealth`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"nodeId":"ghost"}',
    });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { code: string }).code).toBe('not_found');
  });
});

describe('state rules', () => {
  it('heartbeats: timestamp trusted when sent, metrics stored; heartbeats never change status', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'n' });
    await c.sendHeartbeat({ nodeId: 'n', timestamp: timestampFromMs(1_600_000_000_000), metrics: { cpuUsagePercent: 3 } });
    expect(cp.node('n')!.lastHeartbeatMs).toBe(1_600_000_000_000);
    expect(cp.node('n')!.lastMetrics!.cpuUsagePercent).toBe(3);
    const before = Date.now();
    await c.sendHeartbeat({ nodeId: 'n' });
    expect(cp.node('n')!.lastHeartbeatMs!).toBeGreaterThanOrEqual(before);
  });

  it('optional heartbeat monitor: a silent node turns UNHEALTHY; one that never sent a heartbeat is skipped', async () => {
    const cp = await devCp({ heartbeatIntervalSeconds: 1, heartbeatTimeoutSeconds: 1 });
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'silent' });
    await c.registerNode({ nodeId: 'never' });
    await c.sendHeartbeat({ nodeId: 'silent' });
    const deadline = Date.now() + 20_000;
    while (cp.node('silent')!.status !== 'unhealthy' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(cp.node('silent')).toMatchObject({ status: 'unhealthy', healthStatus: 'unhealthy' });
    expect(cp.node('never')!.status).toBe('active');
  });

  it('UNHEALTHY is sticky; re-registration resets to ACTIVE with health UNKNOWN', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'n' });
    const r = await c.reportHealth({ nodeId: 'n', events: [ev(HealthEventType.XID, HealthWatchSystem.DRIVER, { xid_code: '79' })] });
    expect(r.acknowledged).toBe(true);
    expect(r.nodeStatus).toBe(NodeStatus.UNHEALTHY);
    expect(cp.node('n')!.lastResults.at(-1)).toMatchObject({
      checkName: 'cel_policy',
      status: 'unhealthy',
      message: 'CEL policy: unhealthy (rule: fatal-xid)',
    });
    // An empty report: health HEALTHY, status stays UNHEALTHY.
    const r2 = await c.reportHealth({ nodeId: 'n' });
    expect(r2.nodeStatus).toBe(NodeStatus.UNHEALTHY);
    expect(cp.node('n')!.healthStatus).toBe('healthy');
    // A node-side UNHEALTHY result alone also does it, no policy involved.
    await c.registerNode({ nodeId: 'n' });
    expect(cp.node('n')!.status).toBe('active');
    expect(cp.node('n')!.healthStatus).toBe('unknown');
    expect(cp.node('n')!.registrations).toBe(2);
    const r3 = await c.reportHealth({ nodeId: 'n', results: [{ checkName: 'gpu', status: HealthStatus.UNHEALTHY }] });
    expect(r3.nodeStatus).toBe(NodeStatus.UNHEALTHY);
  });

  it('default policy outcome rules: first matching rule per event, worst across events', () => {
    const X = HealthEventType;
    const S = HealthWatchSystem;
    const cases: Array<[HealthEvent, string, HealthStatus]> = [
      [ev(X.XID, S.DRIVER, { xid_code: '79' }), 'fatal-xid', HealthStatus.UNHEALTHY],
      [ev(X.XID, S.DRIVER, { xid_code: '79.0' }), 'fatal-xid', HealthStatus.UNHEALTHY],
      [ev(X.XID, S.DRIVER, { xid_code: '31' }), 'fatal-xid', HealthStatus.UNHEALTHY],
      [ev(X.XID, S.DRIVER, { xid_code: '8' }), 'recoverable-xid', HealthStatus.DEGRADED],
      [ev(X.XID, S.DRIVER, { xid_code: 'XID79' }), 'recoverable-xid', HealthStatus.DEGRADED],
      [ev(X.XID, S.DRIVER, {}), 'recoverable-xid', HealthStatus.DEGRADED],
      [ev(X.ECC_DBE, S.MEM, {}), 'ecc-dbe', HealthStatus.UNHEALTHY],
      [ev(X.MEMORY, S.MEM, { ecc_dbe_count: '1' }), 'ecc-dbe', HealthStatus.UNHEALTHY],
      [ev(X.MEMORY, S.MEM, { ecc_dbe_count: '0' }), 'default', HealthStatus.HEALTHY],
      [ev(X.ECC_SBE, S.MEM, { ecc_sbe_count: '101' }), 'ecc-sbe-high', HealthStatus.DEGRADED],
      [ev(X.ECC_SBE, S.MEM, { ecc_sbe_count: '100' }), 'default', HealthStatus.HEALTHY],
      [ev(X.ECC_SBE, S.MEM, {}), 'default', HealthStatus.HEALTHY],
      [ev(X.THERMAL, S.THERMAL, { temperature: '95' }), 'thermal-critical', HealthStatus.UNHEALTHY],
      [ev(X.THERMAL, S.THERMAL, { temperature: '95.5' }), 'thermal-critical', HealthStatus.UNHEALTHY],
      [ev(X.THERMAL, S.THERMAL, { temperature: '94' }), 'thermal-warning', HealthStatus.DEGRADED],
      [ev(X.THERMAL, S.THERMAL, { temperature: '85' }), 'thermal-warning', HealthStatus.DEGRADED],
      [ev(X.THERMAL, S.THERMAL, { temperature: '84' }), 'default', HealthStatus.HEALTHY],
      [ev(X.THERMAL, S.THERMAL, { temperature: 'hot' }), 'default', HealthStatus.HEALTHY],
      [ev(X.NVLINK, S.NVLINK, { link_id: '3' }), 'nvlink-error', HealthStatus.DEGRADED],
      [ev(X.UNKNOWN, S.NVLINK, {}), 'nvlink-error', HealthStatus.DEGRADED],
      [ev(X.PCIE, S.PCIE, {}), 'pcie-error', HealthStatus.DEGRADED],
      [ev(X.POWER, S.POWER, { power_watts: '450.500000' }), 'power-warning', HealthStatus.DEGRADED],
      [ev(X.DRIVER_ERROR, S.DRIVER, {}), 'default', HealthStatus.HEALTHY],
    ];
    for (const [e, rule, status] of cases) {
      expect(evaluateEvent(e), `${HealthEventType[e.eventType]} ${JSON.stringify(e.metrics)}`).toEqual({ rule, status });
    }
    // Go's strconv: ParseInt -> CEL int (bigint), ParseFloat -> double, ParseBool -> bool, else string.
    expect(parseMetricValue('+79')).toBe(79n);
    expect(parseMetricValue('-1')).toBe(-1n);
    expect(parseMetricValue('79.0')).toBe(79);
    expect(parseMetricValue(' 79')).toBe(' 79');
    expect(parseMetricValue('0x4F')).toBe('0x4F');
    expect(parseMetricValue('0x1p3')).toBe(8);
    expect(parseMetricValue('true')).toBe(true);
    expect(parseMetricValue('F')).toBe(false);
    expect(parseMetricValue('1e3')).toBe(1000);
    expect(parseMetricValue('1e400')).toBe('1e400');
    expect(parseMetricValue('-Inf')).toBe(-Infinity);
    expect(Number.isNaN(parseMetricValue('NaN'))).toBe(true);
    expect(parseMetricValue('9223372036854775807')).toBe(9223372036854775807n);
    expect(parseMetricValue('9223372036854775808')).toBe(9223372036854775808);
  });

  it('worst across events decides the report', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'n' });
    const r = await c.reportHealth({
      nodeId: 'n',
      events: [ev(HealthEventType.THERMAL, HealthWatchSystem.THERMAL, { temperature: '86' }), ev(HealthEventType.DRIVER_ERROR, HealthWatchSystem.DRIVER, {})],
    });
    expect(r.nodeStatus).toBe(NodeStatus.ACTIVE);
    expect(cp.node('n')!.healthStatus).toBe('degraded');
    expect(cp.events('n').map((e) => e.verdict)).toEqual(['degraded', 'healthy']);
  });
});

describe('commands and admin RPCs', () => {
  it('IssueCommand: CORDON/DRAIN/UNCORDON are control-plane-only; RUN_DIAGNOSTIC/TERMINATE queued and delivered at most once', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'n', provider: 'gcp', region: 'r1', metadata: { labels: { pool: 'p1' } } });
    expect(await codeOf(c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.UNCORDON }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.UNKNOWN }))).toBe(Code.InvalidArgument);
    expect(await codeOf(c.issueCommand({ nodeId: 'ghost', commandType: NodeCommandType.TERMINATE }))).toBe(Code.NotFound);
    await c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.CORDON });
    expect(cp.node('n')!.status).toBe('cordoned');
    await c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.UNCORDON });
    expect(cp.node('n')!.status).toBe('active');
    await c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.DRAIN });
    expect(cp.node('n')!.status).toBe('draining');
    const d = await c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.RUN_DIAGNOSTIC, parameters: { test: 'all' } });
    const t = await c.issueCommand({ nodeId: 'n', commandType: NodeCommandType.TERMINATE });
    expect(d.commandId).toMatch(/^[0-9a-f-]{36}$/);
    const got = await c.getNodeCommands({ nodeId: 'n' });
    expect(got.commands.map((x) => [x.commandId, x.type])).toEqual([
      [d.commandId, NodeCommandType.RUN_DIAGNOSTIC],
      [t.commandId, NodeCommandType.TERMINATE],
    ]);
    expect(got.commands[0]!.parameters).toEqual({ test: 'all' });
    expect(got.commands[0]!.issuedAt).toBeDefined();
    expect((await c.getNodeCommands({ nodeId: 'n' })).commands).toEqual([]);
  });

  it('ListNodes / GetNode / ListInstances / GetInstance', async () => {
    const cp = await devCp();
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'a', provider: 'gcp', region: 'r1', metadata: { labels: { pool: 'p1' } }, gpus: [{ index: 0, uuid: 'GPU-x' }] });
    await c.registerNode({ nodeId: 'b', provider: 'lambda', region: 'r2' });
    await c.reportHealth({ nodeId: 'b', events: [ev(HealthEventType.ECC_DBE, HealthWatchSystem.MEM, {})] });
    expect((await c.listNodes({})).nodes.map((n) => n.nodeId).sort()).toEqual(['a', 'b']);
    expect((await c.listNodes({ provider: 'gcp' })).nodes.map((n) => n.nodeId)).toEqual(['a']);
    expect((await c.listNodes({ status: NodeStatus.UNHEALTHY })).nodes.map((n) => n.nodeId)).toEqual(['b']);
    const a = (await c.getNode({ nodeId: 'a' })).node!;
    expect(a.gpus[0]!.uuid).toBe('GPU-x');
    expect(a.metadata!.labels.pool).toBe('p1');
    expect(a.status).toBe(NodeStatus.ACTIVE);
    expect(await codeOf(c.getNode({ nodeId: 'zz' }))).toBe(Code.NotFound);
    expect((await c.listInstances({ poolName: 'p1' })).instances.map((i) => i.instanceId)).toEqual(['a']);
    expect((await c.getInstance({ instanceId: 'b' })).instance!.provider).toBe('lambda');
    expect(await codeOf(c.getInstance({ instanceId: '' }))).toBe(Code.InvalidArgument);
  });

  it('prints a compact line per event and state change', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (b: Buffer) => (text += b.toString()));
    const cp = await devCp({ print: out });
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'n', gpus: [{ index: 0 }] });
    await c.reportHealth({ nodeId: 'n', events: [ev(HealthEventType.XID, HealthWatchSystem.DRIVER, { xid_code: '79' })] });
    expect(text).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/);
    expect(text).toMatch(/node n: registered \(new\) 1 GPU/);
    expect(text).toMatch(/node n: event gpu0 xid xid_code=79 -> unhealthy \(fatal-xid\)/);
    expect(text).toMatch(/node n: active -> unhealthy/);
    for (const line of text.trim().split('\n')) expect(line.length).toBeLessThan(240);
  });
  it('on a TTY it redraws a node table with the recent lines', async () => {
    const out = Object.assign(new PassThrough(), { isTTY: true });
    let text = '';
    out.on('data', (b: Buffer) => (text += b.toString()));
    const cp = await devCp({ print: out });
    const c = rpc(cp.url);
    await c.registerNode({ nodeId: 'tty-node', gpus: [{ index: 0 }, { index: 1 }] });
    await c.reportHealth({ nodeId: 'tty-node', events: [ev(HealthEventType.THERMAL, HealthWatchSystem.THERMAL, { temperature: '96' })] });
    const deadline = Date.now() + 20_000;
    while (!/tty-node\s+unhealthy\s+unhealthy\s+2\s/.test(text) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    const frame = text.slice(text.lastIndexOf('\x1b[H\x1b[2J'));
    expect(frame).toMatch(/NODE\s+STATUS\s+HEALTH\s+GPUS\s+HEARTBEAT\s+EVENTS/);
    expect(frame).toMatch(/tty-node\s+unhealthy\s+unhealthy\s+2\s+-\s+1/);
    expect(frame).toContain('thermal-critical');
  });
});
