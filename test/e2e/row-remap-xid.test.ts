/**
 * XID 63/64 through the agent process on the fake backend: on an H100 (row remapping reported
 * through the counters) they raise no fault and reach the control plane as nothing, as gpud; on
 * a V100 (page retirement, no remapped-rows counters) they are faults as the catalog rates them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { DIST_BUILT, MAIN_JS, metricValue, startAgent, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping row-remap XID e2e: ${MAIN_JS} is not built (npm run build)`);

describe.skipIf(!DIST_BUILT)('XID 63/64 and row-remapping counters, agent process', () => {
  let cp: DevControlPlane;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    cp = await startDevControlPlane({ healthCheckIntervalSeconds: 60, heartbeatIntervalSeconds: 30 });
  });

  afterAll(async () => {
    for (const a of agents) await a.stop('SIGKILL');
    await cp?.close();
  });

  async function start(node: string, model: string): Promise<AgentProcess> {
    const a = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none', '--telemetry-interval', '1s'],
      env: { NAVARCH_GPU_COUNT: '2', NAVARCH_GPU_TYPE: model },
    });
    agents.push(a);
    await waitFor('first telemetry sample', async () => (await a.status()).devices.every((d) => d.telemetry !== null));
    await waitFor('registered', () => cp.node(node));
    return a;
  }

  /** Inject the codes on GPU 1, then XID 48 as a marker: once 48 is at the control plane, the others were handled. */
  async function injectThenMark(a: AgentProcess, node: string, codes: number[]) {
    for (const c of codes) expect((await a.inject({ kind: 'xid', gpu: 1, xid: c })).status).toBe(200);
    expect((await a.inject({ kind: 'xid', gpu: 1, xid: 48 })).status).toBe(200);
    await waitFor('marker XID 48 at the control plane', () => cp.events(node).some((e) => e.metrics.xid_code === '48' && e.gpuIndex === 1));
  }

  it('H100 (remapped-rows counters): XID 63 and 64 raise nothing, are counted and said once', async () => {
    const node = 'e2e-remap-h100';
    const a = await start(node, 'NVIDIA H100 80GB HBM3');
    expect((await a.status()).devices[1]?.telemetry?.remappedRowsCorrected).not.toBeNull();
    await injectThenMark(a, node, [63, 64, 63]);
    const s = await a.status();
    expect(s.activeFaults.map((f) => f.key)).toEqual(['gpu1/xid/48']);
    expect(cp.events(node).filter((e) => e.metrics.xid_code === '63' || e.metrics.xid_code === '64')).toEqual([]);
    const m = await a.metrics();
    expect(metricValue(m, 'navarch_agent_xid_total', 'gpu="1"', 'code="63"')).toBe(2);
    expect(metricValue(m, 'navarch_agent_xid_total', 'gpu="1"', 'code="64"')).toBe(1);
    const said = a.logs.filter((l) => /raises no fault: the GPU reports row remapping through its counters/.test(l.msg));
    expect(said.map((l) => l.msg.slice(0, 17))).toEqual(['XID 63 on GPU 1 r', 'XID 64 on GPU 1 r']);
  });

  it('V100 (no remapped-rows counters): XID 63 and 64 are faults as the catalog rates them', async () => {
    const node = 'e2e-remap-v100';
    const a = await start(node, 'Tesla V100-SXM2-16GB');
    expect((await a.status()).devices[1]?.telemetry?.remappedRowsCorrected).toBeNull();
    await injectThenMark(a, node, [63, 64]);
    const faults = (await a.status()).activeFaults;
    expect(faults.find((f) => f.key === 'gpu1/xid/63')).toMatchObject({ severity: 'warning', action: 'reset_gpu' });
    expect(faults.find((f) => f.key === 'gpu1/xid/64')).toMatchObject({ severity: 'critical', action: 'replace' });
    await waitFor('XID 63 and 64 at the control plane', () => {
      const codes = new Set(cp.events(node).map((e) => e.metrics.xid_code));
      return codes.has('63') && codes.has('64');
    });
    expect(a.logs.some((l) => /raises no fault: the GPU reports row remapping/.test(l.msg))).toBe(false);
  });
});
