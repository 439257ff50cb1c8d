/**
 * Issue 8's flapping scenario through the agent process (dist/cli/main.js run, fake backend)
 * against the development control plane over loopback, which judges every ReportHealth alone as
 * Navarch's server does. GPU 2 is lost (XID 79, critical), GPU 1 overheats (97 C) and cools down:
 * the node must read UNHEALTHY on every report while XID 79 is active, and HEALTHY once GPU 2 is
 * back too. Every report's computed health is recorded (onReport), so a flap in between is seen.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane, type ReceivedReport } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, startAgent, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn('[flapping.test] skipped: dist/cli/main.js is not built (run "npm run build")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.skipIf(!DIST_BUILT)('whole-state reports: no flapping while a critical fault is active', () => {
  for (const verdict of ['agent', 'policy'] as const) {
    it(`--verdict ${verdict}: thermal clears while XID 79 stays -> UNHEALTHY on every report; all clear -> HEALTHY`, async () => {
      const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 2 });
      cleanups.push(() => cp.close());
      const node = `flap-${verdict}`;
      const reports: ReceivedReport[] = [];
      cp.onReport((r) => r.nodeId === node && reports.push(r));
      const stateDir = tempDir('flap');
      cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
      const agent = await startAgent({
        args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none', '--telemetry-interval', '1s', '--verdict', verdict],
        env: { NAVARCH_GPU_COUNT: '4' },
        stateDir,
      });
      cleanups.push(() => agent.stop('SIGKILL'));
      await waitFor('healthy after registration', () => cp.node(node)?.healthStatus === 'healthy', 60_000);

      expect((await agent.inject({ kind: 'gpu_lost', gpu: 2 })).status).toBe(200);
      await waitFor('unhealthy (GPU 2 lost)', () => cp.node(node)?.healthStatus === 'unhealthy', 30_000);
      const fromXid = reports.length - 1;
      expect((await agent.inject({ kind: 'temperature', gpu: 1, celsius: 97 })).status).toBe(200);
      await waitFor('thermal event', () => cp.events(node).some((e) => e.eventType === 'thermal' && e.gpuIndex === 1), 30_000);
      expect((await agent.inject({ kind: 'recover', gpu: 1 })).status).toBe(200);
      // A clear goes out in Navarch's vocabulary (event_type unknown, cleared_event_type thermal).
      await waitFor('thermal clear delivered', () => cp.events(node).some((e) => e.gpuIndex === 1 && e.metrics.cleared_event_type === 'thermal'), 30_000);
      // Two more periodic reports after the clear, still with XID 79 active.
      const afterClear = reports.length;
      await waitFor('two reports after the thermal clear', () => reports.length >= afterClear + 2, 30_000);
      const whileXid = reports.slice(fromXid);
      expect(whileXid.length).toBeGreaterThanOrEqual(4);
      expect(whileXid.filter((r) => r.health !== 'unhealthy')).toEqual([]);
      if (verdict === 'agent') expect(whileXid.every((r) => r.results.some((x) => x.checkName === 'navarch_agent' && x.status === 'unhealthy'))).toBe(true);
      else expect(whileXid.every((r) => r.results.some((x) => x.checkName === 'cel_policy' && x.status === 'unhealthy'))).toBe(true);

      // GPU 2 answers again: every fault cleared, the node reads HEALTHY (Status stays UNHEALTHY: sticky, as in Navarch).
      expect((await agent.inject({ kind: 'recover', gpu: 2 })).status).toBe(200);
      await waitFor('healthy after all clear', () => cp.node(node)?.healthStatus === 'healthy', 30_000);
      const s = await agent.status();
      expect(s.activeFaults).toEqual([]);
      expect(cp.node(node)!.status).toBe('unhealthy');
      expect(await agent.stop('SIGTERM')).toBe(0);
    }, 120_000);
  }
});
