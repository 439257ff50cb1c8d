import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../src/api/metrics.js';
import { startApiServer, type ApiServer } from '../../src/api/server.js';
import { parseFakeFault, InjectValidationError } from '../../src/api/inject.js';
import type { AgentStatus, AgentView, DeviceStatus } from '../../src/api/types.js';
import type { FakeFault } from '../../src/backends/types.js';
import type { Telemetry } from '../../src/nvml/types.js';

const telemetry: Telemetry = {
  temperatureC: 71,
  powerUsageW: 412.5,
  powerLimitW: 700,
  gpuUtilPercent: 93,
  memUtilPercent: 40,
  memoryUsedBytes: 40 * 1024 ** 3,
  memoryTotalBytes: 80 * 1024 ** 3,
  smClockMhz: 1980,
  memClockMhz: 2619,
  clockEventReasons: 0,
  performanceState: 0,
  fanSpeedPercent: null,
  persistenceMode: true,
  eccModeCurrent: true,
  eccModePending: true,
  eccVolatileCorrected: 3,
  eccVolatileUncorrected: 1,
  eccAggregateCorrected: 5,
  eccAggregateUncorrected: 1,
  retiredPagesSbe: 2,
  retiredPagesDbe: 1,
  retiredPagesPending: false,
  remappedRowsCorrected: 0,
  remappedRowsUncorrected: 0,
  remappedRowsPending: false,
  remappedRowsFailure: true,
  pcieReplayCounter: 7,
  pcieLinkGenCurrent: 5,
  pcieLinkGenMax: 5,
  pcieLinkWidthCurrent: 16,
  pcieLinkWidthMax: 16,
  nvlinks: [
    { link: 0, active: true, replayErrors: 1, recoveryErrors: 0, crcFlitErrors: 2, crcDataErrors: 0 },
    { link: 1, active: false, replayErrors: 2, recoveryErrors: 0, crcFlitErrors: 3, crcDataErrors: 0 },
  ],
};

function device(i: number, t: Telemetry | null): DeviceStatus {
  return {
    index: i,
    uuid: `GPU-${i}`,
    name: 'NVIDIA H100 80GB HBM3',
    serial: null,
    pciBusId: `00000000:${(0x41 + i).toString(16).toUpperCase()}:00.0`,
    pciBusIdShort: `0000:${(0x41 + i).toString(16)}:00`,
    minorNumber: i,
    memoryTotalBytes: 80 * 1024 ** 3,
    error: null,
    telemetry: t,
    sampleError: null,
    sampledAtMs: t ? Date.now() : null,
    lastXid: i === 1 ? 79 : 0,
  };
}

class View implements AgentView {
  live = true;
  injected: FakeFault[] = [];
  withInject = true;
  st: AgentStatus = {
    agent: { version: '0.1.0', nodeId: 'n1', pid: 1, startedAtMs: 0, uptimeS: 1, stateDir: '/tmp' },
    backend: { kind: 'fake', reason: 'test', driverError: null, warnings: [] },
    system: { driverVersion: '550.1', nvmlVersion: null, cudaDriverVersion: '12.4' },
    devices: [device(0, telemetry), device(1, null)],
    activeFaults: [
      {
        key: 'gpu1/xid/79',
        gpuIndex: 1,
        gpuUuid: 'GPU-1',
        type: 'xid',
        system: 'DRIVER',
        severity: 'critical',
        action: 'reboot',
        message: 'x',
        metrics: { xid_code: '79' },
        sinceMs: 1,
        lastSeenMs: 1,
        count: 1,
        lastEventId: 'e1',
      },
    ],
    controlPlane: { server: 'http://x', state: 'connected', registered: true, nodeStatus: null, lastError: null, lastContactMs: 1 },
    events: { pending: 4, store: null },
    kmsg: { enabled: false, path: null, state: 'disabled' },
    watch: null,
  };
  alive() {
    return this.live;
  }
  status() {
    return this.st;
  }
  get inject() {
    return this.withInject
      ? (f: FakeFault) => {
          this.injected.push(f);
        }
      : undefined;
  }
}

let view: View;
let api: ApiServer;
let metrics: AgentMetrics;

beforeAll(async () => {
  view = new View();
  metrics = new AgentMetrics({ view, hostname: 'node-a', version: '0.1.0' });
  api = await startApiServer({ host: '127.0.0.1', port: 0, view, metrics });
});
afterAll(async () => {
  await api.close();
});

const post = (body: string, ct = 'application/json') => fetch(`${api.url}/inject`, { method: 'POST', headers: { 'Content-Type': ct }, body });

describe('local API', () => {
  it('answers /healthz by the main loop liveness', async () => {
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    view.live = false;
    const r = await fetch(`${api.url}/healthz`);
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({ ok: false });
    view.live = true;
  });

  it('serves /status as JSON', async () => {
    const r = await fetch(`${api.url}/status`);
    expect(r.headers.get('content-type')).toBe('application/json');
    const s = (await r.json()) as AgentStatus;
    expect(s.devices).toHaveLength(2);
    expect(s.activeFaults[0]?.key).toBe('gpu1/xid/79');
  });

  it('serves dcgm-exporter named metrics with dcgm labels', async () => {
    const r = await fetch(`${api.url}/metrics`);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await r.text();
    const labels = 'gpu="0",UUID="GPU-0",pci_bus_id="00000000:41:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-a"';
    expect(text).toContain(`DCGM_FI_DEV_GPU_TEMP{${labels}} 71`);
    expect(text).toContain(`DCGM_FI_DEV_POWER_USAGE{${labels}} 412.5`);
    expect(text).toContain(`DCGM_FI_DEV_FB_USED{${labels}} 40960`);
    expect(text).toContain(`DCGM_FI_DEV_FB_FREE{${labels}} 40960`);
    expect(text).toContain(`DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{${labels}} 1`);
    expect(text).toContain(`DCGM_FI_DEV_ROW_REMAP_FAILURE{${labels}} 1`);
    expect(text).toContain(`DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL{${labels}} 5`);
    expect(text).toContain(`DCGM_FI_DEV_PCIE_REPLAY_COUNTER{${labels}} 7`);
    expect(text).toContain('DCGM_FI_DEV_XID_ERRORS{gpu="1",UUID="GPU-1"');
    expect(text).toMatch(/DCGM_FI_DEV_XID_ERRORS\{gpu="1"[^}]*\} 79/);
    expect(text).not.toMatch(/DCGM_FI_DEV_GPU_TEMP\{gpu="1"/);
    expect(text).toContain('navarch_agent_active_faults{gpu="1",type="xid",severity="critical"} 1');
    expect(text).toContain('navarch_agent_events_pending 4');
    expect(text).toContain('navarch_agent_controlplane_connected 1');
    expect(text).toContain('navarch_agent_nvlink_up{gpu="0",UUID="GPU-0",link="1"} 0');
    expect(text).toMatch(/navarch_agent_build_info\{version="0\.1\.0",node_version="v[\d.]+",backend="fake",driver_version="550\.1"\} 1/);
    expect(text).toContain('# TYPE navarch_agent_event_delivery_seconds histogram');
    metrics.recordXid(1, 79, 3);
    metrics.observeDelivery(0.2);
    const t2 = await (await fetch(`${api.url}/metrics`)).text();
    expect(t2).toContain('navarch_agent_xid_total{gpu="1",code="79"} 3');
    expect(t2).toContain('navarch_agent_event_delivery_seconds_count 1');
    // prom-client's default process and Node.js metrics, on the agent's registry.
    expect(t2).toContain('# TYPE process_cpu_seconds_total counter');
    expect(t2).toContain('# TYPE process_resident_memory_bytes gauge');
    expect(t2).toMatch(/^nodejs_heap_size_used_bytes \d+/m);
    // Cumulative NVML counts are typed as counters (dcgm-exporter's types); levels stay gauges.
    for (const name of [
      'DCGM_FI_DEV_PCIE_REPLAY_COUNTER',
      'DCGM_FI_DEV_ECC_SBE_VOL_TOTAL',
      'DCGM_FI_DEV_ECC_DBE_AGG_TOTAL',
      'DCGM_FI_DEV_RETIRED_DBE',
      'DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS',
      'DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL',
      'DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL',
    ]) {
      expect(t2, name).toContain(`# TYPE ${name} counter`);
    }
    for (const name of ['DCGM_FI_DEV_GPU_TEMP', 'DCGM_FI_DEV_XID_ERRORS', 'DCGM_FI_DEV_ROW_REMAP_PENDING']) expect(t2, name).toContain(`# TYPE ${name} gauge`);
  });

  it('exports kernel-log overruns and lost records once the reader runs', async () => {
    view.st.kmsg = { enabled: true, path: '/dev/kmsg', state: 'running', overruns: 3, lostRecords: 1234 };
    // a fresh registry: the shared one caches the status document for 250 ms per scrape
    const text = await new AgentMetrics({ view, hostname: 'node-a', version: '0.1.0' }).registry.metrics();
    expect(text).toContain('navarch_agent_kmsg_lost{kind="overruns"} 3');
    expect(text).toContain('navarch_agent_kmsg_lost{kind="records"} 1234');
    expect(((await (await fetch(`${api.url}/status`)).json()) as AgentStatus).kmsg).toMatchObject({ overruns: 3, lostRecords: 1234 });
  });

  it('accepts valid injections', async () => {
    const r = await post(JSON.stringify({ kind: 'xid', gpu: 1, xid: 79 }));
    expect(r.status).toBe(200);
    expect(view.injected.at(-1)).toEqual({ kind: 'xid', gpu: 1, xid: 79 });
  });

  it('rejects bad injections with a clear 400', async () => {
    const cases: Array<[string, RegExp]> = [
      ['{', /not valid JSON/],
      ['[]', /JSON object/],
      ['{"kind":"meteor"}', /"kind" must be one of/],
      ['{"kind":"xid","gpu":1}', /"xid" is required/],
      ['{"kind":"xid","gpu":2,"xid":79}', /"gpu" must be <= 1/],
      ['{"kind":"xid","gpu":-1,"xid":79}', /"gpu" must be >= 0/],
      ['{"kind":"temperature","gpu":0,"celsius":"hot"}', /"celsius" must be a number/],
      ['{"kind":"ecc","gpu":0}', /needs "sbe" and\/or "dbe"/],
    ];
    for (const [body, re] of cases) {
      const r = await post(body);
      expect(r.status, body).toBe(400);
      expect(((await r.json()) as { error: string }).error).toMatch(re);
    }
    expect((await post('{}', 'text/plain')).status).toBe(415);
    expect((await post(JSON.stringify({ kind: 'xid', message: 'x'.repeat(70_000) }))).status).toBe(413);
    expect((await fetch(`${api.url}/inject`)).status).toBe(405);
    expect((await fetch(`${api.url}/status`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${api.url}/nope`)).status).toBe(404);
  });

  it('has no /inject without an injectable backend', async () => {
    view.withInject = false;
    const r = await post(JSON.stringify({ kind: 'xid', gpu: 1, xid: 79 }));
    expect(r.status).toBe(404);
    view.withInject = true;
  });
});

describe('parseFakeFault', () => {
  it('validates every kind', () => {
    expect(parseFakeFault({ kind: 'recover' })).toEqual({ kind: 'recover' });
    expect(parseFakeFault({ kind: 'nvlink_down', gpu: 0, link: 3 })).toEqual({ kind: 'nvlink_down', gpu: 0, link: 3 });
    expect(parseFakeFault({ kind: 'remapped_rows', gpu: 0, failure: true })).toEqual({ kind: 'remapped_rows', gpu: 0, failure: true });
    expect(parseFakeFault({ kind: 'xid', gpu: '2', xid: '79' })).toEqual({ kind: 'xid', gpu: 2, xid: 79 });
    expect(() => parseFakeFault({ kind: 'nvlink_down', gpu: 0, link: 18 })).toThrow(InjectValidationError);
    expect(() => parseFakeFault({ kind: 'xid', gpu: 0, xid: 79 }, 0)).toThrow(/no GPUs|must be <=/);
  });
});
