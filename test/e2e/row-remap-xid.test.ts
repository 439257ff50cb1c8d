/**
 * XID 63/64 through the agent process on the fake backend: on an H100 (row remapping reported
 * through the counters) they raise no fault and reach the control plane as nothing, as gpud; on
 * a V100 (page retirement, no remapped-rows counters) they are faults as the catalog rates them.
 * The same over the native addon and the project's fake libnvidia-ml, where one GPU's
 * nvmlDeviceGetRemappedRows answers NOT_SUPPORTED.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { FAKE_NVML_LIB, FakeNvml, defaultDevices, ensureFakeNvmlBuilt } from '../helpers/fake-nvml.js';
import { DIST_BUILT, MAIN_JS, REPO_ROOT, metricValue, startAgent, waitFor, type AgentProcess } from './agent-helpers.js';

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

const ADDON = join(REPO_ROOT, 'build', 'Release', 'navarch_nvml.node');
function fakeLibAvailable(): boolean {
  try {
    ensureFakeNvmlBuilt();
  } catch (err) {
    console.warn(`fake libnvidia-ml could not be built: ${(err as Error).message}`);
  }
  return existsSync(FAKE_NVML_LIB);
}
const addonReady = DIST_BUILT && existsSync(ADDON) && fakeLibAvailable();
if (DIST_BUILT && !addonReady)
  console.warn(`skipping the NVML half of the row-remap XID e2e: needs ${ADDON} (npm run build:addon) and ${FAKE_NVML_LIB} (npm run build:fake)`);

describe.skipIf(!addonReady)('XID 63/64 over the addon and the fake libnvidia-ml', () => {
  let fake: FakeNvml;
  let cp: DevControlPlane;
  let agent: AgentProcess;
  const node = 'e2e-remap-nvml';

  beforeAll(async () => {
    const devices = defaultDevices(2);
    // GPU 1: nvmlDeviceGetRemappedRows answers NOT_SUPPORTED, as on a GPU without row remapping.
    devices[1] = { ...devices[1], unsupported: ['remappedRows'] };
    fake = FakeNvml.create({ devices });
    cp = await startDevControlPlane({ healthCheckIntervalSeconds: 60, heartbeatIntervalSeconds: 30 });
    agent = await startAgent({
      args: ['--gpu-backend', 'nvml', '--server', cp.url, '--node-id', node, '--kmsg-path', 'none', '--telemetry-interval', '1s'],
      env: fake.env(),
    });
    await waitFor('first telemetry sample', async () => (await agent.status()).devices.every((d) => d.telemetry !== null));
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
    fake?.cleanup();
  });

  it("GPU 0 (counters answer): no fault; GPU 1 (NOT_SUPPORTED): the catalog's fault", async () => {
    const devs = (await agent.status()).devices;
    expect(devs[0]?.telemetry?.remappedRowsCorrected).toBe(0);
    expect(devs[1]?.telemetry?.remappedRowsCorrected).toBeNull();
    await fake.xid(0, 63);
    await fake.xid(1, 63);
    await fake.xid(0, 48);
    await waitFor('marker XID 48 and GPU 1 XID 63 at the control plane', () => {
      const ev = cp.events(node);
      return ev.some((e) => e.gpuIndex === 0 && e.metrics.xid_code === '48') && ev.some((e) => e.gpuIndex === 1 && e.metrics.xid_code === '63');
    });
    const keys = (await agent.status()).activeFaults.map((f) => f.key).sort();
    expect(keys).toEqual(['gpu0/xid/48', 'gpu1/xid/63']);
    expect(cp.events(node).some((e) => e.gpuIndex === 0 && e.metrics.xid_code === '63')).toBe(false);
    expect(metricValue(await agent.metrics(), 'navarch_agent_xid_total', 'gpu="0"', 'code="63"')).toBe(1);
  });
});
