/**
 * Operator controls through the agent process (dist/cli/main.js run, fake backend) against the
 * development control plane over loopback: the config file's faultOverrides (an overridden XID
 * comes out with the new severity, a suppressed one never reaches the control plane; a bad rule
 * is exit 2 with one line).
 */
import { spawnSync } from 'node:child_process';
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
    expect(s.overrides?.rules).toEqual(expect.arrayContaining([{ rule: 'xid:43', severity: 'critical', action: 'reset_gpu' }, { rule: 'xid:31', suppress: true }]));
    const m = await agent.metrics();
    expect(metricValue(m, 'navarch_agent_suppressed_events_total', 'rule="xid:31"')).toBe(1);
    // The suppressed XID is not counted as seen either.
    expect(metricValue(m, 'navarch_agent_xid_total', 'code="31"')).toBeNull();
    expect(metricValue(m, 'navarch_agent_xid_total', 'code="43"')).toBe(1);
    expect(await agent.stop('SIGTERM')).toBe(0);
  }, 120_000);

  it('a bad override is refused at start: exit 2, one line naming the key', () => {
    const dir = scratch('bad-override');
    const config = join(dir, 'agent.yaml');
    writeFileSync(config, 'faultOverrides:\n  classes:\n    thermal: { severity: fatal }\n');
    const r = spawnSync(process.execPath, [MAIN_JS, 'run', '--config', config, '--gpu-backend', 'fake', '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0'], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toBe(`navarch-agent: ${config}: key "faultOverrides.classes.thermal.severity": expected one of info, warning, critical, got "fatal"`);
  });
});
