/**
 * RUN_DIAGNOSTIC end to end: the agent process (dist/cli/main.js run, fake backend) against the
 * development control plane; the control plane issues RUN_DIAGNOSTIC and receives the sweep's
 * per-GPU check results (with the command id) in ReportHealth.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane, type ReceivedResult } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, startAgent, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn('[diagnostic.test] skipped: dist/cli/main.js is not built (run "npx tsc -p tsconfig.build.json")');

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.skipIf(!DIST_BUILT)('RUN_DIAGNOSTIC: agent process + development control plane', () => {
  it('the sweep runs on the node and its per-GPU results reach the control plane', async () => {
    const cp: DevControlPlane = await startDevControlPlane({ heartbeatIntervalSeconds: 5, healthCheckIntervalSeconds: 60 });
    cleanups.push(() => cp.close());
    const stateDir = tempDir('diag');
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    const agent = await startAgent({
      stateDir,
      args: [
        '--server',
        cp.url,
        '--gpu-backend',
        'fake',
        '--kmsg-path',
        'none',
        '--node-id',
        'diag-node',
        '--command-poll-interval',
        '1s',
        '--log-level',
        'info',
      ],
      env: { NAVARCH_GPU_COUNT: '4' },
    });
    cleanups.push(() => agent.stop('SIGKILL'));
    await waitFor('registration', () => cp.node('diag-node'), 60_000);

    // A broken GPU 2 (uncorrectable ECC) and a hot GPU 3.
    expect((await agent.inject({ kind: 'ecc', gpu: 2, dbe: 1 })).ok).toBe(true);
    expect((await agent.inject({ kind: 'temperature', gpu: 3, celsius: 88 })).ok).toBe(true);

    await waitFor('ECC fault stored', async () => (await agent.status()).activeFaults.some((f) => f.key === 'gpu2/ecc_dbe'), 60_000);

    const { commandId, queued } = cp.issueCommand('diag-node', 'run_diagnostic', { test: 'all' });
    expect(queued).toBe(true);
    const ofCommand = (): ReceivedResult[] => cp.results('diag-node').filter((r) => r.details.command_id === commandId);
    const got = await waitFor(
      'diagnostic results at the control plane',
      () => {
        const rs = ofCommand();
        return ['nvml', 'inventory', 'gpu0', 'gpu1', 'gpu2', 'gpu3', 'active_faults'].every((n) => rs.some((r) => r.checkName === n)) ? rs : null;
      },
      90_000,
    );
    const r = Object.fromEntries(got.map((x) => [x.checkName, x]));

    expect(r.nvml).toMatchObject({ status: 'healthy' });
    expect(r.nvml!.details).toMatchObject({ backend: 'fake', cuda_driver_version: '12.4' });
    expect(r.inventory).toMatchObject({ status: 'healthy' });
    expect(r.inventory!.details).toMatchObject({ count: '4', previous_count: '4' });
    expect(r.gpu0!.status).toBe('healthy');
    expect(r.gpu1!.status).toBe('healthy');
    expect(r.gpu2!.status).toBe('unhealthy');
    expect(r.gpu2!.details).toMatchObject({ ecc_uncorrected_volatile: '1', command_id: commandId });
    expect(r.gpu3!.status).toBe('degraded');
    expect(r.gpu3!.details!.temperature_c).toBe('88');
    // The ECC fault is in the store as an active critical fault.
    expect(r.active_faults!.status).toBe('unhealthy');
    expect(got.filter((x) => x.checkName.startsWith('gpu'))).toHaveLength(4);

    // Navarch's rule: any UNHEALTHY result makes the node UNHEALTHY.
    await waitFor('node unhealthy', () => cp.node('diag-node')?.healthStatus === 'unhealthy', 30_000);

    // A selection: only GPU 1.
    const second = cp.issueCommand('diag-node', 'run_diagnostic', { test: 'gpu1' });
    const only = await waitFor(
      'second diagnostic',
      () => {
        const rs = cp.results('diag-node').filter((x) => x.details.command_id === second.commandId);
        return rs.length > 0 ? rs : null;
      },
      90_000,
    );
    expect(only.map((x) => x.checkName)).toEqual(['gpu1']);
    expect(only[0]!.status).toBe('healthy');

    expect(agent.logs.some((l) => l.msg === 'diagnostic results' && l.commandId === commandId)).toBe(true);
    expect(await agent.stop('SIGTERM')).toBe(0);
  }, 180_000);
});
