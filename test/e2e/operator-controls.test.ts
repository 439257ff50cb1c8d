/**
 * Operator controls through the agent process (dist/cli/main.js run, fake backend) against the
 * development control plane over loopback: the config file's faultOverrides (an overridden XID
 * comes out with the new severity, a suppressed one never reaches the control plane; a bad rule
 * is exit 2 with one line) and `navarch-agent faults clear` (the clear reaches the control plane,
 * the node reads HEALTHY again, the clear survives a restart; a condition still present is raised
 * again).
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { xidInfo } from '../../src/xid/catalog.js';
import { DIST_BUILT, MAIN_JS, metricValue, startAgent, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn('[operator-controls.test] skipped: dist/cli/main.js is not built (run "npm run build")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function scratch(prefix: string): string {
  const d = tempDir(prefix);
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

describe.skipIf(!DIST_BUILT)('operator controls (agent process)', () => {
  it('faultOverrides: XID 43 comes out critical with reset_gpu, a suppressed XID 31 never reaches the control plane', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 2 });
    cleanups.push(() => cp.close());
    const dir = scratch('overrides');
    const config = join(dir, 'agent.yaml');
    writeFileSync(config, ['faultOverrides:', '  xid:', '    43: { severity: critical, action: reset_gpu }', '    31: { suppress: true }', ''].join('\n'));
    const node = 'override-node';
    const agent = await startAgent({
      args: ['--config', config, '--gpu-backend', 'fake', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none'],
      env: { NAVARCH_GPU_COUNT: '2' },
      stateDir: join(dir, 'state'),
    });
    cleanups.push(() => agent.stop('SIGKILL'));
    await waitFor('registered', () => cp.node(node)?.healthStatus === 'healthy', 60_000);

    expect((await agent.inject({ kind: 'xid', gpu: 0, xid: 31 })).status).toBe(200);
    expect((await agent.inject({ kind: 'xid', gpu: 1, xid: 43 })).status).toBe(200);
    // XID 13 has no rule: once it is at the control plane, the two before it were sent too (or held back).
    expect((await agent.inject({ kind: 'xid', gpu: 0, xid: 13 })).status).toBe(200);
    await waitFor('XID 13 delivered', () => cp.events(node).some((e) => e.metrics.xid_code === '13'), 30_000);

    const events = cp.events(node);
    const x43 = events.find((e) => e.metrics.xid_code === '43');
    expect(x43?.gpuIndex).toBe(1);
    expect(x43?.metrics).toMatchObject({ severity: 'critical', action: 'reset_gpu', override: 'xid:43' });
    expect(events.filter((e) => e.metrics.xid_code === '31')).toEqual([]);
    expect(events.find((e) => e.metrics.xid_code === '13')?.metrics.severity).toBe(xidInfo(13).severity); // the catalog's own verdict
    expect(events.find((e) => e.metrics.xid_code === '13')?.metrics.override).toBeUndefined();

    const s = await agent.status();
    expect(s.activeFaults.find((f) => f.key === 'gpu1/xid/43')).toMatchObject({ severity: 'critical', action: 'reset_gpu' });
    expect(s.activeFaults.some((f) => f.key.endsWith('/xid/31'))).toBe(false);
    expect(s.overrides?.suppressedTotal).toBe(1);
    expect(s.overrides?.suppressed).toEqual([expect.objectContaining({ rule: 'xid:31', count: 1, lastKey: 'gpu0/xid/31' })]);
    expect(s.overrides?.rules).toEqual(
      expect.arrayContaining([
        { rule: 'xid:43', severity: 'critical', action: 'reset_gpu' },
        { rule: 'xid:31', suppress: true },
      ]),
    );
    const m = await agent.metrics();
    expect(metricValue(m, 'navarch_agent_suppressed_events_total', 'rule="xid:31"')).toBe(1);
    // The suppressed XID is not counted as seen either.
    expect(metricValue(m, 'navarch_agent_xid_total', 'code="31"')).toBeNull();
    expect(metricValue(m, 'navarch_agent_xid_total', 'code="43"')).toBe(1);
    expect(await agent.stop('SIGTERM')).toBe(0);
  }, 120_000);

  it('faults clear: the dev control plane sees the clear and the node goes HEALTHY; durable across a restart', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 1 });
    cleanups.push(() => cp.close());
    const dir = scratch('clear');
    const node = 'clear-node';
    const args = ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none', '--telemetry-interval', '1s'];
    const stateDir = join(dir, 'state');
    let agent = await startAgent({ args, env: { NAVARCH_GPU_COUNT: '4' }, stateDir });
    cleanups.push(() => agent.stop('SIGKILL'));
    await waitFor('registered healthy', () => cp.node(node)?.healthStatus === 'healthy', 60_000);

    expect((await agent.inject({ kind: 'xid', gpu: 2, xid: 79 })).status).toBe(200);
    await waitFor('unhealthy (XID 79)', () => cp.node(node)?.healthStatus === 'unhealthy', 30_000);
    expect((await agent.status()).activeFaults.map((f) => f.key)).toEqual(['gpu2/xid/79']);

    const run = (argv: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [MAIN_JS, ...argv], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
        let out = '';
        let err = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (err += d.toString()));
        p.on('close', (code) => resolve({ code, out, err }));
      });
    // An unknown key: exit 1 and one line; nothing changes.
    const unknown = await run(['faults', 'clear', 'gpu2/xid/48', '--api', agent.url]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toBe('navarch-agent: faults clear: no active fault "gpu2/xid/48" (active faults: navarch-agent faults)\n');
    const ok = await run(['faults', 'clear', 'gpu2/xid/79', '--api', agent.url]);
    expect(ok).toEqual({ code: 0, out: 'cleared gpu2/xid/79\n', err: '' });

    await waitFor('the clear at the control plane', () => cp.events(node).some((e) => e.metrics.cleared_event_type === 'xid' && e.gpuIndex === 2), 30_000);
    const clear = cp.events(node).find((e) => e.metrics.cleared_event_type === 'xid')!;
    expect(clear.eventType).toBe('unknown');
    expect(clear.metrics).toMatchObject({ fault: 'clear', reason: 'operator', cleared_by: 'operator', fault_key: 'gpu2/xid/79' });
    await waitFor('healthy after the clear', () => cp.node(node)?.healthStatus === 'healthy', 30_000);
    expect((await agent.status()).activeFaults).toEqual([]);

    // A condition still present is raised again by the next detection (the telemetry judge forgot it).
    expect((await agent.inject({ kind: 'temperature', gpu: 1, celsius: 97 })).status).toBe(200);
    await waitFor('thermal fault', async () => (await agent.status()).activeFaults.some((f) => f.key === 'gpu1/thermal'), 30_000);
    const byGpu = await run(['faults', 'clear', '--gpu', '1', '--reason', 'checked the fans', '--api', agent.url]);
    expect(byGpu).toEqual({ code: 0, out: 'cleared gpu1/thermal\n', err: '' });
    await waitFor(
      'thermal clear at the control plane',
      () => cp.events(node).some((e) => e.metrics.cleared_event_type === 'thermal' && e.metrics.reason === 'checked the fans'),
      30_000,
    );
    await waitFor('thermal raised again', async () => (await agent.status()).activeFaults.some((f) => f.key === 'gpu1/thermal'), 30_000);
    expect((await agent.inject({ kind: 'recover', gpu: 1 })).status).toBe(200);
    await waitFor('thermal cleared by telemetry', async () => (await agent.status()).activeFaults.length === 0, 30_000);

    // Durable: after a restart on the same state directory (same boot) the cleared XID stays cleared.
    expect((await agent.inject({ kind: 'xid', gpu: 3, xid: 79 })).status).toBe(200);
    await waitFor('XID 79 on GPU 3', async () => (await agent.status()).activeFaults.some((f) => f.key === 'gpu3/xid/79'), 30_000);
    expect((await run(['faults', 'clear', '--all', '--api', agent.url])).out).toBe('cleared gpu3/xid/79\n');
    expect(await agent.stop('SIGTERM')).toBe(0);
    agent = await startAgent({ args, env: { NAVARCH_GPU_COUNT: '4' }, stateDir });
    expect((await agent.status()).activeFaults).toEqual([]);
    expect(await agent.stop('SIGTERM')).toBe(0);

    // No agent answering: one line saying so, exit 1.
    const none = await run(['faults', 'clear', '--all', '--api', agent.url]);
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/^navarch-agent: faults clear: no running agent answers at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); nothing was cleared\n$/);
  }, 180_000);

  it('faults clear restarts the reboot-escalation count: an XID cleared in boot 2 and back in boot 3 is not escalated', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 60 });
    cleanups.push(() => cp.close());
    const dir = scratch('clear-escalation');
    const stateDir = join(dir, 'state');
    const bootIdPath = join(dir, 'boot_id');
    let agent: Awaited<ReturnType<typeof startAgent>> | null = null;
    cleanups.push(() => agent?.stop('SIGKILL'));
    const boot = async (id: string) => {
      writeFileSync(bootIdPath, `${id}\n`);
      agent = await startAgent({
        stateDir,
        args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'clear-escalation', '--kmsg-path', 'none'],
        env: { NAVARCH_GPU_COUNT: '4', NAVARCH_BOOT_ID_PATH: bootIdPath },
      });
      return agent;
    };
    const xid79 = async (a: NonNullable<typeof agent>) => {
      expect((await a.inject({ kind: 'xid', gpu: 2, xid: 79 })).status).toBe(200);
      return waitFor('XID 79 fault', async () => (await a.status()).activeFaults.find((f) => f.key === 'gpu2/xid/79'));
    };
    let a = await boot('aaaaaaaa-0000-4000-8000-00000000000a');
    expect(await xid79(a)).toMatchObject({ action: 'reboot' });
    expect(await a.stop('SIGTERM')).toBe(0);
    a = await boot('bbbbbbbb-0000-4000-8000-00000000000b');
    expect(await xid79(a)).toMatchObject({ action: 'reboot' });
    expect((await a.status()).faultHistory?.faults).toBe(1);
    const r = await fetch(`${a.url}/faults/clear`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"key":"gpu2/xid/79"}' });
    expect(await r.json()).toMatchObject({ cleared: ['gpu2/xid/79'] });
    expect((await a.status()).faultHistory?.faults).toBe(0);
    expect(await a.stop('SIGTERM')).toBe(0);
    // Boot 3: without the clear this is the third boot in a row with XID 79 (escalated to replace, test/e2e/reboot-escalation.test.ts).
    a = await boot('cccccccc-0000-4000-8000-00000000000c');
    const f = await xid79(a);
    expect(f).toMatchObject({ severity: 'critical', action: 'reboot' });
    expect(f.metrics.reboot_escalated).toBeUndefined();
    expect(await a.stop('SIGTERM')).toBe(0);
  }, 180_000);

  it('a bad override is refused at start: exit 2, one line naming the key', () => {
    const dir = scratch('bad-override');
    const config = join(dir, 'agent.yaml');
    writeFileSync(config, 'faultOverrides:\n  classes:\n    thermal: { severity: fatal }\n');
    const r = spawnSync(
      process.execPath,
      [MAIN_JS, 'run', '--config', config, '--gpu-backend', 'fake', '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0'],
      {
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      },
    );
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toBe(`navarch-agent: ${config}: key "faultOverrides.classes.thermal.severity": expected one of info, warning, critical, got "fatal"`);
  });
});
