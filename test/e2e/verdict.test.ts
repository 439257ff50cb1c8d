/**
 * The node's verdict through the agent process (dist/cli/main.js run, fake backend) and the
 * development control plane judging every ReportHealth with real CEL over Navarch's default
 * policy, on 127.0.0.1: a warning (88 C) reads DEGRADED and its clear HEALTHY again; a critical
 * XID outside Navarch's fatal list (109) reads UNHEALTHY with --verdict agent but only DEGRADED
 * with --verdict policy (the default policy cannot say more, docs/controlplane.md); a row-remapping
 * failure, sent in Navarch's vocabulary as ecc_dbe, reads UNHEALTHY in both modes, by the policy
 * itself in policy mode. test/e2e/flapping.test.ts covers the lost GPU (XID 79) and its recovery.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane, type ReceivedReport } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, startAgent, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn('[verdict.test] skipped: dist/cli/main.js is not built (run "npm run build")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const result = (r: ReceivedReport, name: string) => r.results.find((x) => x.checkName === name)?.status;

describe.skipIf(!DIST_BUILT)('the control plane concludes what the agent knows (real CEL, default policy)', () => {
  for (const verdict of ['agent', 'policy'] as const) {
    it(`--verdict ${verdict}: warning DEGRADED, clear HEALTHY, XID 109 ${verdict === 'agent' ? 'UNHEALTHY' : 'only DEGRADED'}, row-remap failure UNHEALTHY`, async () => {
      const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 2 });
      cleanups.push(() => cp.close());
      const node = `verdict-${verdict}`;
      const reports: ReceivedReport[] = [];
      cp.onReport((r) => r.nodeId === node && reports.push(r));
      const stateDir = tempDir('verdict');
      cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
      const args = ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none', '--telemetry-interval', '1s'];
      const agent = await startAgent({ args: verdict === 'agent' ? args : [...args, '--verdict', 'policy'], env: { NAVARCH_GPU_COUNT: '4' }, stateDir });
      cleanups.push(() => agent.stop('SIGKILL'));
      await waitFor('healthy after registration', () => cp.node(node)?.healthStatus === 'healthy', 60_000);
      const judge = verdict === 'agent' ? 'navarch_agent' : 'cel_policy';

      // A warning: 88 C on GPU 1.
      expect((await agent.inject({ kind: 'temperature', gpu: 1, celsius: 88 })).status).toBe(200);
      await waitFor('degraded (88 C)', () => cp.node(node)?.healthStatus === 'degraded', 30_000);
      const warm = reports.length;
      await waitFor('a periodic report while 88 C', () => reports.length >= warm + 1, 30_000);
      expect(reports.slice(warm).map((r) => [r.health, result(r, judge)])).toEqual(reports.slice(warm).map(() => ['degraded', 'degraded']));

      // Its clear, in Navarch's vocabulary (event_type unknown): HEALTHY again.
      expect((await agent.inject({ kind: 'temperature', gpu: 1, celsius: 50 })).status).toBe(200);
      await waitFor('healthy after the clear', () => cp.node(node)?.healthStatus === 'healthy', 30_000);
      const clear = cp.events(node).find((e) => e.metrics.cleared_event_type === 'thermal');
      expect(clear).toMatchObject({ eventType: 'unknown', gpuIndex: 1, metrics: { fault: 'clear' } });
      expect(cp.node(node)!.status).not.toBe('unhealthy');

      // A critical XID that is not in Navarch's fatal list.
      const beforeXid = reports.length;
      expect((await agent.inject({ kind: 'xid', gpu: 3, xid: 109 })).status).toBe(200);
      await waitFor('XID 109 delivered', () => cp.events(node).some((e) => e.metrics.xid_code === '109'), 30_000);
      const fromXid = reports.findIndex((r, i) => i >= beforeXid && r.health !== 'healthy');
      expect(fromXid).toBeGreaterThanOrEqual(beforeXid);
      await waitFor('two reports after XID 109', () => reports.length >= fromXid + 3, 30_000);
      const withXid = reports.slice(fromXid);
      if (verdict === 'agent') {
        expect(withXid.map((r) => [r.health, result(r, 'navarch_agent')])).toEqual(withXid.map(() => ['unhealthy', 'unhealthy']));
        expect(cp.node(node)!.status).toBe('unhealthy');
      } else {
        // The default policy reads an XID outside its list as recoverable-xid: DEGRADED, on every report (re-sent fault).
        expect(withXid.map((r) => [r.health, result(r, 'cel_policy')])).toEqual(withXid.map(() => ['degraded', 'degraded']));
        expect(cp.node(node)!.status).not.toBe('unhealthy');
      }

      // A critical memory fault: row remapping failed on GPU 0. Sent as ecc_dbe, the default policy's own rule says UNHEALTHY.
      const beforeRemap = reports.length;
      expect((await agent.inject({ kind: 'remapped_rows', gpu: 0, failure: true })).status).toBe(200);
      const judged = await waitFor(
        'the policy judges a report UNHEALTHY (row remapping failure)',
        () => reports.slice(beforeRemap).find((r) => result(r, 'cel_policy') === 'unhealthy'),
        30_000,
      );
      const remap = cp.events(node).find((e) => e.metrics.fault_key === 'gpu0/remapped_rows/failure');
      expect(remap).toMatchObject({ eventType: 'ecc_dbe', system: 'DCGM_HEALTH_WATCH_MEM', metrics: { agent_event_type: 'memory', severity: 'critical' } });
      expect(judged.health).toBe('unhealthy');
      if (verdict === 'agent') expect(result(judged, 'navarch_agent')).toBe('unhealthy');
      expect(cp.node(node)!.healthStatus).toBe('unhealthy');
      expect(cp.node(node)!.status).toBe('unhealthy');
      expect(await agent.stop('SIGTERM')).toBe(0);
    }, 120_000);
  }
});
