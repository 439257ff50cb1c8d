/**
 * The full agent process (dist/cli/main.js run, fake backend) against the development control
 * plane: SIGKILL during a stream of injected faults, restart, nothing that reached the durable
 * store is lost, the node is re-registered and its faults re-asserted.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { openEventStore } from '../../src/store/event-store.js';
import { DIST_BUILT, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn('[controlplane-agent.test] skipped: dist/cli/main.js is not built (run "npm run build")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const XIDS = [13, 31, 43, 45, 48, 63, 64, 74, 79, 92];

describe.skipIf(!DIST_BUILT)('agent process + development control plane', () => {
  it('kill -9 during a stream of injected faults, restart: nothing lost, faults re-asserted', async () => {
    let cp: DevControlPlane = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 5 });
    const cps = [cp];
    cleanups.push(() => Promise.all(cps.map((c) => c.close())));
    const port = cp.port;
    const stateDir = tempDir('cp-kill');
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    const args = ['--server', cp.url, '--gpu-backend', 'fake', '--kmsg-path', 'none', '--node-id', 'kill-node', '--log-level', 'info'];
    let agent: AgentProcess = await startAgent({ args, stateDir });
    cleanups.push(() => agent.stop('SIGKILL'));
    await waitFor('registration', () => cp.node('kill-node'), 60_000);
    const allEvents = () => cps.flatMap((c) => c.events('kill-node'));

    // A stream of distinct faults (gpu x xid, so nothing coalesces): the first third live, the
    // rest while the control plane is down (they pile up in the durable store), SIGKILL in the
    // middle of that, injections go on (and fail while the agent is dead).
    const combos = XIDS.flatMap((x) => [0, 1, 2, 3].map((gpu) => ({ gpu, xid: x })));
    const third = Math.floor(combos.length / 3);
    const injectedAt = new Map<string, number>();
    let killedAt = 0;
    for (let i = 0; i < combos.length; i++) {
      const { gpu, xid } = combos[i]!;
      if (i === third) {
        await waitFor('live third delivered', () => allEvents().length >= third, 60_000);
        await cp.close();
      }
      if (i === 2 * third) {
        agent.proc.kill('SIGKILL');
        killedAt = Date.now();
        await agent.exited;
      }
      try {
        const res = await agent.inject({ kind: 'xid', gpu, xid });
        if (res.ok) injectedAt.set(`gpu${gpu}/xid/${xid}`, Date.now());
      } catch {
        // The agent is dead: not injected.
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(killedAt).toBeGreaterThan(0);
    const receivedBefore = new Set(allEvents().map((e) => e.metrics.event_id));

    // What the dead agent left in its durable store.
    const store = await openEventStore({ dir: join(stateDir, 'events'), fsync: false });
    const pendingAtKill = store.pending().map((e) => ({ id: e.id, key: e.key }));
    await store.close();
    expect(pendingAtKill.length).toBeGreaterThan(0);

    // The control plane comes back (empty: it forgot the node), the agent restarts on the same state dir.
    cp = await startDevControlPlane({ port, heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 5 });
    cps.push(cp);
    agent = await startAgent({ args, stateDir });
    await waitFor('re-registration', () => cp.node('kill-node'), 60_000);
    await waitFor(
      'pending events delivered',
      () => {
        const ids = new Set(allEvents().map((e) => e.metrics.event_id));
        return pendingAtKill.every((p) => ids.has(p.id));
      },
      60_000,
    );
    await waitFor('agent store drained', async () => (await agent.status()).events.pending === 0, 60_000);

    const received = allEvents().filter((e) => e.metrics.reasserted !== 'true');
    const keys = new Set(received.map((e) => e.metrics.fault_key));
    // Every fault injected well before the kill reached the control plane, before or after it.
    for (const [key, at] of injectedAt) {
      if (at < killedAt - 1000) expect(keys.has(key), key).toBe(true);
    }
    // Everything that was durable at the kill was delivered after the restart.
    for (const p of pendingAtKill) expect(keys.has(p.key), p.key).toBe(true);
    expect(receivedBefore.size).toBeGreaterThanOrEqual(third);

    // Registration reset the node to ACTIVE; the agent's first reports state its faults again
    // (--verdict agent, the default: the navarch_agent result, not re-sent events).
    await waitFor('unhealthy again', () => cp.node('kill-node')?.status === 'unhealthy', 60_000);
    expect(cp.node('kill-node')!.lastResults.some((r) => r.checkName === 'navarch_agent' && r.status === 'unhealthy')).toBe(true);

    // And it keeps working: a fault injected now is delivered.
    const res = await agent.inject({ kind: 'xid', gpu: 7, xid: 94 });
    expect(res.ok).toBe(true);
    await waitFor('new fault delivered', () => cp.events('kill-node').some((e) => e.metrics.fault_key === 'gpu7/xid/94'), 60_000);
    const code = await agent.stop('SIGTERM');
    expect(code).toBe(0);
  }, 240_000);
});
