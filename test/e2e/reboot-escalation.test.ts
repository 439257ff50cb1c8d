/**
 * Reboot-aware escalation through the agent process: the agent runs on the fake backend with one
 * state directory, and each "reboot" is a restart with another boot id (NAVARCH_BOOT_ID_PATH
 * points at a file the test rewrites). XID 79 (RESTART_BM: reboot) on GPU 2 in three boots in a
 * row is escalated to critical/replace on the third, with the history in the event's metrics, at
 * the dev control plane and in /status; the replace fault then outlives the next reboot, and an
 * operator's clear restarts the count.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, MAIN_JS, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping reboot-escalation e2e: ${MAIN_JS} is not built (npm run build)`);

const NODE = 'e2e-reboot-escalation';

describe.skipIf(!DIST_BUILT)('reboot-aware escalation across agent restarts', () => {
  let cp: DevControlPlane;
  let agent: AgentProcess | null = null;
  const dir = tempDir('reboot-esc');
  const stateDir = join(dir, 'state');
  const bootIdPath = join(dir, 'boot_id');

  beforeAll(async () => {
    cp = await startDevControlPlane({ healthCheckIntervalSeconds: 60, heartbeatIntervalSeconds: 30 });
  });

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
  });

  async function bootAgent(bootId: string): Promise<AgentProcess> {
    writeFileSync(bootIdPath, `${bootId}\n`);
    const a = await startAgent({
      stateDir,
      args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', NODE, '--kmsg-path', 'none', '--telemetry-interval', '1s'],
      env: { NAVARCH_GPU_COUNT: '4', NAVARCH_BOOT_ID_PATH: bootIdPath },
    });
    agent = a;
    return a;
  }

  async function xid79Once(a: AgentProcess) {
    expect((await a.inject({ kind: 'xid', gpu: 2, xid: 79 })).status).toBe(200);
    const f = await waitFor('XID 79 fault', async () => (await a.status()).activeFaults.find((x) => x.key === 'gpu2/xid/79'));
    await waitFor('events acknowledged', async () => (await a.status()).events.pending === 0);
    return f;
  }

  it('XID 79 back after 2 reboots is escalated to replace, at the control plane and in /status', async () => {
    const bootIds = ['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002', 'cccccccc-0000-4000-8000-000000000003'];
    // Boots 1 and 2: a reboot fault, as the catalog says (RESTART_BM).
    for (const [i, id] of bootIds.slice(0, 2).entries()) {
      const a = await bootAgent(id);
      const s = await a.status();
      expect(s.faultHistory).toMatchObject({ bootId: id, boots: i + 1, problem: null });
      // The previous boot's reboot fault was cleared at open: a reboot cures it.
      expect(s.activeFaults.find((x) => x.key === 'gpu2/xid/79')).toBeUndefined();
      const f = await xid79Once(a);
      expect(f).toMatchObject({ severity: 'critical', action: 'reboot' });
      expect(f.metrics.reboot_escalated).toBeUndefined();
      expect(await a.stop('SIGTERM')).toBe(0);
    }
    const before = cp.events(NODE).filter((e) => e.metrics.xid_code === '79');
    expect(before.length).toBeGreaterThanOrEqual(2);
    expect(before.every((e) => e.metrics.reboot_escalated === undefined)).toBe(true);

    // Boot 3: the same XID on the same GPU again.
    const a = await bootAgent(bootIds[2] as string);
    const f = await xid79Once(a);
    expect(f).toMatchObject({ severity: 'critical', action: 'replace', gpuIndex: 2 });
    expect(f.metrics).toMatchObject({
      xid_code: '79',
      reboot_escalated: 'true',
      reboots_since_first: '2',
      boots_seen: '3',
      escalated_from: 'reboot',
      reboot_threshold: '2',
    });
    expect(f.message).toMatch(/came back after 2 reboots/);
    const s = await a.status();
    expect(s.faultHistory).toMatchObject({ bootId: bootIds[2], boots: 3, faults: 1, escalated: 1, problem: null });
    const ev = await waitFor('escalated event at the control plane', () =>
      cp.events(NODE).find((e) => e.metrics.xid_code === '79' && e.metrics.reboot_escalated === 'true'),
    );
    expect(ev.gpuIndex).toBe(2);
    expect(ev.metrics).toMatchObject({ reboots_since_first: '2', boots_seen: '3', escalated_from: 'reboot' });
    expect(ev.message).toMatch(/replace the GPU/);
    await waitFor('node UNHEALTHY', () => cp.node(NODE)?.status === 'unhealthy');
    expect(a.logs.filter((l) => /came back after 2 reboots: escalated to replace/.test(l.msg))).toHaveLength(1);
    // `navarch-agent status` says it too.
    const st = spawnSync(process.execPath, [MAIN_JS, 'status', '--api', a.url], { encoding: 'utf8', timeout: 30_000 });
    expect(st.stdout).toMatch(/\nreboot escalation: +1 XID fault\(s\) escalated to replace: back after 2 reboots \(3 boots in the history\)\n/);
    expect(st.stdout).toMatch(/replace/);
    expect(await a.stop('SIGTERM')).toBe(0);

    // Boot 4: a reboot does not cure a GPU to be replaced: the fault is still there before any XID.
    const d = await bootAgent('dddddddd-0000-4000-8000-000000000004');
    const kept = (await d.status()).activeFaults.find((x) => x.key === 'gpu2/xid/79');
    expect(kept).toMatchObject({ action: 'replace', severity: 'critical' });
    // An operator's clear (POST /faults/clear) ends it and restarts the count, as gpud's SetHealthy:
    // the same XID in this boot is a reboot fault again.
    const r = await fetch(`${d.url}/faults/clear`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ key: 'gpu2/xid/79', reason: 'GPU reseated' }),
    });
    expect(r.status).toBe(200);
    await waitFor('fault cleared', async () => !(await d.status()).activeFaults.some((x) => x.key === 'gpu2/xid/79'));
    expect((await d.status()).faultHistory).toMatchObject({ faults: 0 });
    const again = await xid79Once(d);
    expect(again).toMatchObject({ action: 'reboot' });
    expect(again.metrics.reboot_escalated).toBeUndefined();
    expect(await d.stop('SIGTERM')).toBe(0);
  });
});
