/**
 * A kernel-log storm through the agent process: 5,000 NVRM XID records appended at once to the
 * kernel-log file the agent tails (the /dev/kmsg record format), one fatal XID 79 in the middle.
 * Every record reaches the development control plane, with exact counts (coalesced per fault
 * key: far fewer HealthEvents than lines), and the XID 79 arrives as its own event.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { formatKmsgRecord } from '../../src/sources/kmsg-parse.js';
import { DIST_BUILT, MAIN_JS, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping kmsg storm e2e: ${MAIN_JS} is not built (npm run build)`);

describe.skipIf(!DIST_BUILT)('kernel-log storm through the agent process', () => {
  let cp: DevControlPlane | undefined;
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
  });

  it('5,000 XID lines with one XID 79 among them arrive whole, with exact counts', async () => {
    cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
    const file = join(tempDir('kmsg-storm'), 'kmsg');
    writeFileSync(file, '');
    agent = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', 'kmsg-storm', '--kmsg-path', file],
      env: { NAVARCH_GPU_COUNT: '4' },
    });
    await waitFor('registration', () => cp!.node('kmsg-storm'));
    await waitFor('kmsg running', async () => (await agent!.status()).kmsg.state === 'running');
    const dev = (await agent.status()).devices[2]!;
    const N = 5000;
    const mid = 2500;
    const records: string[] = [];
    for (let i = 1; i <= N; i++) {
      const msg =
        i === mid
          ? `NVRM: Xid (PCI:${dev.pciBusIdShort}): 79, pid=${i}, name=storm, GPU has fallen off the bus.`
          : `NVRM: Xid (PCI:${dev.pciBusIdShort}): 13, pid=${i}, name=storm, Graphics SM Warp Exception`;
      records.push(formatKmsgRecord({ level: 4, seq: i, usecSinceBoot: i * 10, message: msg }));
    }
    appendFileSync(file, records.join(''));
    // Per delivered event id, its count (a re-sent id carries the same count).
    const counts = (code: string): number => {
      const byId = new Map<string, number>();
      for (const e of cp!.events('kmsg-storm')) {
        if (e.metrics.xid_code !== code || e.metrics.reasserted === 'true' || e.gpuIndex !== 2) continue;
        byId.set(e.metrics.event_id!, Number(e.metrics.count));
      }
      return [...byId.values()].reduce((a, b) => a + b, 0);
    };
    await waitFor('every record at the control plane', () => counts('13') + counts('79') >= N, 60_000);
    await waitFor('acknowledged', async () => (await agent!.status()).events.pending === 0);
    expect(counts('13')).toBe(N - 1);
    expect(counts('79')).toBe(1);
    const xidEvents = cp.events('kmsg-storm').filter((e) => e.eventType === 'xid' && e.metrics.reasserted !== 'true');
    // Coalesced: a storm becomes a few events carrying counts, not one per line.
    expect(xidEvents.length).toBeLessThan(100);
    expect((await agent.status()).kmsg.overruns).toBe(0);
  }, 120_000);
});
