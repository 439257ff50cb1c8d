/**
 * End to end over the fake backend: the built CLI runs as a process next to the dev control
 * plane; faults are injected from outside (POST /inject and `navarch-agent inject`) and observed
 * through /status, /metrics and the control plane. Also: SIGTERM flushes and exits 0.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, MAIN_JS, metricValue, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping agent e2e tests: ${MAIN_JS} is not built (npm run build)`);

describe.skipIf(!DIST_BUILT)('agent on the fake backend', () => {
  let cp: DevControlPlane;
  let agent: AgentProcess;

  beforeAll(async () => {
    cp = await startDevControlPlane({ healthCheckIntervalSeconds: 60, heartbeatIntervalSeconds: 30 });
    agent = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'e2e-fake', '--kmsg-path', 'none', '--telemetry-interval', '1s', '--pool', 'p1'],
      env: { NAVARCH_GPU_COUNT: '4' },
    });
  });

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
  });

  it('registers with inventory and reports the backend', async () => {
    const s = await agent.status();
    expect(s.backend.kind).toBe('fake');
    expect(s.devices).toHaveLength(4);
    const node = await waitFor('registration', () => cp.node('e2e-fake'));
    expect(node.gpus).toHaveLength(4);
    expect(node.metadata.labels.pool).toBe('p1');
    await waitFor('connected state', async () => (await agent.status()).controlPlane.state === 'connected');
  });

  it('injects an XID over POST /inject and shows it everywhere', async () => {
    const r = await agent.inject({ kind: 'xid', gpu: 2, xid: 79 });
    expect(r.status).toBe(200);
    const fault = await waitFor('active XID 79 fault', async () => (await agent.status()).activeFaults.find((f) => f.key === 'gpu2/xid/79'));
    expect(fault).toMatchObject({ type: 'xid', severity: 'critical', gpuIndex: 2 });
    const m = await waitFor('xid metrics', async () => {
      const t = await agent.metrics();
      return metricValue(t, 'navarch_agent_xid_total', 'gpu="2"', 'code="79"') === 1 ? t : null;
    });
    expect(metricValue(m, 'DCGM_FI_DEV_XID_ERRORS', 'gpu="2"')).toBe(79);
    expect(metricValue(m, 'navarch_agent_active_faults', 'gpu="2"', 'type="xid"', 'severity="critical"')).toBe(1);
    // Pushed immediately (not on the 60 s health tick): the control plane turns the node UNHEALTHY.
    await waitFor('control plane UNHEALTHY', () => cp.node('e2e-fake')?.status === 'unhealthy');
    expect(cp.events('e2e-fake').some((e) => e.eventType === 'xid' && e.metrics.xid_code === '79' && e.gpuIndex === 2)).toBe(true);
    await waitFor('events acknowledged', async () => (await agent.status()).events.pending === 0);
    const m2 = await waitFor('delivery latency observed', async () => {
      const t = await agent.metrics();
      return (metricValue(t, 'navarch_agent_event_delivery_seconds_count') ?? 0) >= 1 ? t : null;
    });
    expect(metricValue(m2, 'navarch_agent_controlplane_connected')).toBe(1);
  });

  it('injects through `navarch-agent inject` and the telemetry judge sees it', async () => {
    const r = spawnSync(process.execPath, [MAIN_JS, 'inject', 'temperature', '--gpu', '1', '--celsius', '97', '--api', agent.url], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/injected temperature on GPU 1/);
    const f = await waitFor('thermal fault', async () => (await agent.status()).activeFaults.find((x) => x.gpuIndex === 1 && x.type === 'thermal'));
    expect(f.severity).toBe('critical');
    const t = await agent.metrics();
    expect(metricValue(t, 'DCGM_FI_DEV_GPU_TEMP', 'gpu="1"')).toBe(97);
    // A bad injection through the CLI: one line, exit 2.
    const bad = spawnSync(process.execPath, [MAIN_JS, 'inject', 'xid', '--gpu', '9', '--xid', '79', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/"gpu" must be <= 3/);
  });

  it('devices and faults read the running agent', () => {
    const d = spawnSync(process.execPath, [MAIN_JS, 'devices', '--json', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    // Exit 1: critical faults are active (injected above); 0 only when healthy (src/cli/status-view.ts).
    expect(d.status).toBe(1);
    const dj = JSON.parse(d.stdout) as { source: string; devices: unknown[] };
    expect(dj.source).toBe('agent');
    expect(dj.devices).toHaveLength(4);
    const f = spawnSync(process.execPath, [MAIN_JS, 'faults', '--api', agent.url], { encoding: 'utf8', timeout: 30_000 });
    expect(f.status).toBe(1);
    expect(f.stdout).toMatch(/xid\s+critical/);
  });
});

describe.skipIf(!DIST_BUILT)('agent shutdown', () => {
  it('SIGTERM with the control plane down: exits 0, keeps events on disk, delivers them on the next start', async () => {
    const a = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-down', '--kmsg-path', 'none', '--shutdown-timeout', '2s'],
    });
    expect((await a.inject({ kind: 'xid', gpu: 0, xid: 48 })).status).toBe(200);
    await waitFor('stored event', async () => (await a.status()).events.pending >= 1);
    expect(await a.stop('SIGTERM')).toBe(0);
    expect(a.logs.some((l) => l.msg.includes('events still pending at exit'))).toBe(true);
    expect(a.logs.at(-1)?.msg).toBe('navarch-agent exiting');
    // With no agent running, `faults` reads the state directory.
    const f = spawnSync(process.execPath, [MAIN_JS, 'faults', '--json', '--state-dir', a.stateDir, '--api', 'http://127.0.0.1:9'], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(f.status).toBe(1); // XID 48 is critical
    const fj = JSON.parse(f.stdout) as { source: string; activeFaults: Array<{ key: string }> };
    expect(fj.source).toMatch(/^state dir/);
    expect(fj.activeFaults.map((x) => x.key)).toContain('gpu0/xid/48');

    const cp = await startDevControlPlane();
    try {
      const b = await startAgent({ stateDir: a.stateDir, args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'e2e-down', '--kmsg-path', 'none'] });
      await waitFor('replayed XID 48', () => cp.events('e2e-down').some((e) => e.metrics.xid_code === '48'));
      await waitFor('acknowledged', async () => (await b.status()).events.pending === 0);
      expect(await b.stop('SIGINT')).toBe(0);
    } finally {
      await cp.close();
    }
  });

  it('SIGTERM flushes a fresh event to a reachable control plane before exiting', async () => {
    const cp = await startDevControlPlane({ healthCheckIntervalSeconds: 3600, heartbeatIntervalSeconds: 3600 });
    try {
      const a = await startAgent({ args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'e2e-flush', '--kmsg-path', 'none'] });
      await waitFor('registered', () => cp.node('e2e-flush'));
      expect((await a.inject({ kind: 'xid', gpu: 1, xid: 94 })).status).toBe(200);
      const code = await a.stop('SIGTERM');
      expect(code).toBe(0);
      expect(cp.events('e2e-flush').some((e) => e.metrics.xid_code === '94')).toBe(true);
    } finally {
      await cp.close();
    }
  });
});

describe.skipIf(!DIST_BUILT)('agent authentication', () => {
  it('reports a rejected token in /status and still detects faults; a token file is accepted', async () => {
    const cp = await startDevControlPlane({ authToken: 'fleet-token' });
    try {
      const bad = await startAgent({
        args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'e2e-badtoken', '--kmsg-path', 'none'],
        env: { NAVARCH_AUTH_TOKEN: 'nope' },
      });
      await waitFor('unauthorized state', async () => (await bad.status()).controlPlane.state === 'unauthorized');
      expect((await bad.inject({ kind: 'xid', gpu: 0, xid: 79 })).status).toBe(200);
      await waitFor('fault recorded without the control plane', async () => (await bad.status()).activeFaults.some((f) => f.key === 'gpu0/xid/79'));
      expect(bad.logs.some((l) => JSON.stringify(l).includes('nope'))).toBe(false);
      expect(await bad.stop('SIGTERM')).toBe(0);

      const tokenFile = join(bad.stateDir, 'token');
      writeFileSync(tokenFile, 'fleet-token\n');
      const good = await startAgent({
        args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'e2e-goodtoken', '--kmsg-path', 'none', '--auth-token-file', tokenFile],
      });
      await waitFor('connected', async () => (await good.status()).controlPlane.state === 'connected');
      expect(cp.node('e2e-goodtoken')).toBeTruthy();
      expect(await good.stop('SIGTERM')).toBe(0);
    } finally {
      await cp.close();
    }
  });
});

describe.skipIf(!DIST_BUILT)('agent with a scenario file', () => {
  it('plays the fake backend fault script', async () => {
    const dir = tempDir('scenario');
    const scen = join(dir, 'scenario.yaml');
    writeFileSync(scen, 'name: e2e\nevents:\n  - at: 500ms\n    gpu: 2\n    fault: xid\n    xid: 48\n');
    const b = await startAgent({
      stateDir: join(dir, 'state'),
      args: ['--gpu-backend', 'fake', '--scenario', scen, '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-scen', '--kmsg-path', 'none'],
    });
    try {
      await waitFor('scripted XID 48', async () => (await b.status()).activeFaults.some((f) => f.key === 'gpu2/xid/48'));
    } finally {
      expect(await b.stop('SIGTERM')).toBe(0);
    }
  });
});
