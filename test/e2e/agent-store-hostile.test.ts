/**
 * The agent process on a hostile state directory (issue 10, items 6 and 7): records with a valid
 * CRC but a foreign shape, a directory where events.lock belongs, a file where events/ belongs,
 * and a lock file naming a live unrelated process. The agent starts every time, delivers what is
 * real to the development control plane and never sends the foreign records.
 */
import { appendFileSync, readFileSync, readdirSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane } from '../../src/devcp/dev-server.js';
import { openEventStore } from '../../src/store/event-store.js';
import { encodeLine } from '../../src/store/log-format.js';
import { DIST_BUILT, REPO_ROOT, startAgent, tempDir, waitFor } from './agent-helpers.js';
import { createRequire } from 'node:module';

/** Whether the built addon has flock (an addon built before native/flock.cc has not). */
const HAS_FLOCK = (() => {
  try {
    const a = createRequire(import.meta.url)(join(REPO_ROOT, 'build/Release/navarch_nvml.node')) as { tryFlock?: unknown };
    return typeof a.tryFlock === 'function';
  } catch {
    return false;
  }
})();
if (!HAS_FLOCK) console.warn('[agent-store-hostile.test] lock checks skipped: the built addon has no tryFlock (run "npm run build:addon")');

if (!DIST_BUILT) console.warn('[agent-store-hostile.test] skipped: dist/cli/main.js is not built (run "npm run build")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.skipIf(!DIST_BUILT)('agent process on a hostile state directory', () => {
  it('foreign records dropped and never sent, misplaced paths moved aside, a stale lock of a live pid ignored: the agent runs', async () => {
    const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 5 });
    cleanups.push(() => cp.close());
    const stateDir = tempDir('store-hostile');
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    const storeDir = join(stateDir, 'events');

    // A real pending event, then foreign records with valid CRCs, and a directory at events.lock.
    const s = await openEventStore({ dir: storeDir, tryFlock: null });
    const good = await s.append({
      type: 'xid',
      system: 'DRIVER',
      gpuIndex: 1,
      gpuUuid: '',
      metrics: { xid_code: '48' },
      message: 'XID 48',
      timeMs: Date.now(),
      severity: 'critical',
      action: 'reboot',
      citation: 'test',
      source: 'kmsg',
      key: 'gpu1/xid/48',
      fault: 'none',
    });
    await s.close();
    const log = join(storeDir, 'events.log');
    appendFileSync(log, encodeLine({ t: 'p', e: { id: 'foreign-1', key: 'gpu0/xid/13', count: 'many' }, s: {} }));
    appendFileSync(log, encodeLine({ t: 'p', e: { ...good.event, id: 'foreign-2', key: 'gpu0/xid/31', gpuIndex: 'zero' }, s: {} }));
    mkdirSync(join(storeDir, 'events.lock'));

    const args = ['--server', cp.url, '--gpu-backend', 'fake', '--kmsg-path', 'none', '--node-id', 'hostile-node', '--log-level', 'info'];
    let agent = await startAgent({ args, stateDir });
    cleanups.push(() => agent.stop('SIGKILL'));
    await waitFor('registration', () => cp.node('hostile-node'), 60_000);
    await waitFor('the real event delivered', () => cp.events('hostile-node').some((e) => e.metrics.event_id === good.event.id), 60_000);
    await waitFor('store drained', async () => (await agent.status()).events.pending === 0, 60_000);
    const st = (await agent.status()).events.store as Record<string, unknown>;
    expect(st.badRecords).toBe(2);
    expect(st.misplaced).toBe(1);
    expect(st.lock).toBe(HAS_FLOCK ? 'flock' : 'pidfile');
    expect(agent.logs.filter((l) => l.msg.includes('never writes'))).toHaveLength(1);
    expect(agent.logs.some((l) => l.msg.includes('moved aside') && l.found === 'directory')).toBe(true);
    expect(cp.events('hostile-node').map((e) => e.metrics.event_id)).not.toContain('foreign-1');
    expect(cp.events('hostile-node').map((e) => e.metrics.event_id)).not.toContain('foreign-2');
    expect(await agent.stop('SIGTERM')).toBe(0);

    // A lock file naming pid 1 (alive, this boot: what a reused pid looks like), and a file
    // where the store directory belongs (after the first: a fresh store there).
    rmSync(storeDir, { recursive: true, force: true });
    writeFileSync(storeDir, 'not a directory');
    agent = await startAgent({ args, stateDir });
    const st2 = (await agent.status()).events.store as Record<string, unknown>;
    expect(st2.misplaced).toBe(1);
    expect(readdirSync(stateDir).filter((n) => n.startsWith('events.misplaced-'))).toHaveLength(1);
    expect(await agent.stop('SIGTERM')).toBe(0);

    if (!HAS_FLOCK) return;
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    writeFileSync(join(storeDir, 'events.lock'), `1 ${bootId}\n`);
    agent = await startAgent({ args, stateDir });
    expect(((await agent.status()).events.store as Record<string, unknown>).lock).toBe('flock');
    const res = await agent.inject({ kind: 'xid', gpu: 2, xid: 79 });
    expect(res.ok).toBe(true);
    await waitFor('new fault delivered', () => cp.events('hostile-node').some((e) => e.metrics.fault_key === 'gpu2/xid/79'), 60_000);
    expect(await agent.stop('SIGTERM')).toBe(0);
  }, 240_000);
});
