/**
 * The pure half of `status` / `devices` / `faults` (src/cli/status-view.ts): the health rule and
 * exit codes, where-from lines, text and JSON rendering; and the watch loop
 * (src/cli/status.ts watchLoop) with an injected sleep.
 */
import { describe, expect, it } from 'vitest';
import type { DeviceStatus } from '../../src/api/types.js';
import type { ActiveFault } from '../../src/events/types.js';
import { runStatus, watchLoop } from '../../src/cli/status.js';
import { resolveConfig } from '../../src/config/config.js';
import { exitCodeFor, judgeHealth, renderStatus, sourceLine, statusJson, type StatusView } from '../../src/cli/status-view.js';

const NOW = 1_750_000_000_000;

function dev(i: number, over: Partial<DeviceStatus> = {}): DeviceStatus {
  return {
    index: i,
    uuid: `GPU-${i}`,
    name: 'NVIDIA H100 80GB HBM3',
    serial: null,
    pciBusId: `00000000:4${i}:00.0`,
    pciBusIdShort: `0000:4${i}:00`,
    minorNumber: i,
    memoryTotalBytes: 80 * 1024 ** 3,
    error: null,
    telemetry: null,
    sampleError: null,
    sampledAtMs: null,
    lastXid: 0,
    ...over,
  };
}

function fault(gpu: number, severity: ActiveFault['severity'], over: Partial<ActiveFault> = {}): ActiveFault {
  return {
    key: `gpu${gpu}/xid/79`,
    gpuIndex: gpu,
    gpuUuid: `GPU-${gpu}`,
    type: 'xid',
    system: 'DRIVER',
    severity,
    action: 'reboot',
    message: 'GPU has fallen off the bus',
    metrics: { xid_code: '79' },
    sinceMs: NOW - 120_000,
    lastSeenMs: NOW,
    count: 2,
    lastEventId: 'e1',
    ...over,
  };
}

function view(over: Partial<StatusView> = {}): StatusView {
  return {
    source: { live: true, api: 'http://127.0.0.1:19400' },
    atMs: NOW,
    agent: { version: '0.1.0', nodeId: 'n1', pid: 42, uptimeS: 3725 },
    nodeId: 'n1',
    backend: { kind: 'nvml', reason: 'NVML opened', driverError: null },
    system: { driverVersion: '550.163.01', nvmlVersion: '12.550.163.01', cudaDriverVersion: '12.4' },
    devices: [dev(0), dev(1)],
    activeFaults: [],
    controlPlane: {
      server: 'http://cp:50051',
      state: 'connected',
      registered: true,
      nodeStatus: 'NODE_STATUS_HEALTHY',
      lastError: null,
      lastContactMs: NOW - 5_000,
    },
    backlog: { pending: 0, oldestPendingMs: null },
    durable: true,
    api: { address: '127.0.0.1:19400', state: 'listening', url: 'http://127.0.0.1:19400', failures: 0, lastError: null, nextTryMs: null },
    stateProblem: null,
    ...over,
  };
}

describe('judgeHealth and exit codes', () => {
  it('healthy: no faults, or info faults only; exit 0', () => {
    expect(judgeHealth({ activeFaults: [] })).toEqual({ health: 'healthy', reasons: [] });
    expect(judgeHealth({ activeFaults: [fault(0, 'info')], devices: [dev(0)] }).health).toBe('healthy');
    expect(exitCodeFor('healthy')).toBe(0);
  });
  it('degraded: a warning fault, a GPU that cannot be sampled, events in memory only; exit 1', () => {
    expect(judgeHealth({ activeFaults: [fault(1, 'warning', { type: 'thermal', metrics: {} })] })).toEqual({
      health: 'degraded',
      reasons: ['GPU 1: thermal warning'],
    });
    const unk = dev(0, { sampleError: { code: 'NVML_ERROR_UNKNOWN', status: 999, message: 'x', fn: null } as never });
    expect(judgeHealth({ activeFaults: [], devices: [unk] })).toEqual({ health: 'degraded', reasons: ['GPU 0: NVML_ERROR_UNKNOWN'] });
    expect(judgeHealth({ activeFaults: [], durable: false }).health).toBe('degraded');
    expect(exitCodeFor('degraded')).toBe(1);
  });
  it('unhealthy: driver error, lost GPU, critical fault; worst reasons first; exit 1', () => {
    expect(judgeHealth({ activeFaults: [], driverError: 'NVML failed: DRIVER_NOT_LOADED' })).toEqual({
      health: 'unhealthy',
      reasons: ['driver error: NVML failed: DRIVER_NOT_LOADED'],
    });
    const lost = dev(3, { error: { code: 'NVML_ERROR_GPU_IS_LOST', status: 15, message: 'lost', fn: null } as never });
    const v = judgeHealth({ activeFaults: [fault(1, 'warning', { type: 'pcie', metrics: {} }), fault(3, 'critical')], devices: [lost] });
    expect(v.health).toBe('unhealthy');
    expect(v.reasons).toEqual(['GPU 3: NVML_ERROR_GPU_IS_LOST', 'GPU 3: xid 79 critical', 'GPU 1: pcie warning']);
    expect(judgeHealth({ activeFaults: [fault(-1, 'critical', { type: 'driver_error', metrics: {} })] }).reasons).toEqual(['node: driver_error critical']);
    // the driver error and its driver_error fault are one failure: said once
    expect(judgeHealth({ driverError: 'NVML failed', activeFaults: [fault(-1, 'critical', { type: 'driver_error', metrics: {} })] }).reasons).toEqual([
      'driver error: NVML failed',
    ]);
    expect(exitCodeFor('unhealthy')).toBe(1);
  });
});

describe('renderStatus', () => {
  it('live: says so, shows versions, link, backlog, GPUs and faults', () => {
    const t = renderStatus(view({ activeFaults: [fault(1, 'critical')], backlog: { pending: 3, oldestPendingMs: null } }));
    const lines = t.split('\n');
    expect(lines[0]).toBe('source:        live from the running agent at http://127.0.0.1:19400');
    expect(lines[1]).toBe('health:        unhealthy: GPU 1: xid 79 critical');
    expect(t).toContain('agent:         navarch-agent 0.1.0, pid 42, up 1h2m\n');
    expect(t).toContain('versions:      driver 550.163.01, CUDA 12.4, NVML 12.550.163.01\n');
    expect(t).toContain('control plane: connected (http://cp:50051), registered, node status NODE_STATUS_HEALTHY, last contact 5s ago\n');
    expect(t).toContain('event backlog: 3 pending\n');
    expect(t).toMatch(/\n1 +NVIDIA H100 80GB HBM3 +GPU-1 .* critical: xid 79\n/);
    expect(t).toMatch(/\n1 +gpu1\/xid\/79 +xid +critical +reboot +2 +2m ago +GPU has fallen off the bus\n$/);
    expect(t).not.toContain('local API:');
  });
  it('from disk: NOT LIVE, with why; link unknown; backlog from disk or why it is unknown', () => {
    const disk = view({
      source: { live: false, api: 'http://127.0.0.1:19400', apiProblem: 'connection refused', stateDir: '/var/lib/navarch-agent' },
      agent: null,
      controlPlane: null,
      durable: null,
      api: null,
      backlog: { pending: 2, oldestPendingMs: NOW - 3_600_000 },
    });
    const t = renderStatus(disk);
    expect(t.split('\n')[0]).toBe(
      'source:        NOT LIVE: no agent answered at http://127.0.0.1:19400 (connection refused); GPUs from a local snapshot, faults and backlog read from disk (/var/lib/navarch-agent)',
    );
    expect(t).toContain('control plane: unknown (no running agent answered; only the agent knows its link)\n');
    expect(t).toContain('event backlog: 2 pending, oldest 1h ago (from disk: the agent sends them when it runs)\n');
    expect(t).not.toContain('agent:');
    const none = renderStatus({
      ...disk,
      source: { ...disk.source, stateDir: null } as StatusView['source'],
      backlog: null,
      stateProblem: 'state directory /x does not exist',
    });
    expect(none).toContain('no state directory on disk');
    expect(none).toContain('event backlog: unknown (state directory /x does not exist)\n');
  });
  it('a driver error, no GPUs, no durability, a local API that retries', () => {
    const t = renderStatus(
      view({
        backend: { kind: 'none', reason: 'NVML failed', driverError: 'NVML failed: DRIVER_NOT_LOADED' },
        devices: [],
        system: null,
        durable: false,
        api: { address: '127.0.0.1:19400', state: 'retrying', url: null, failures: 3, lastError: 'address already in use', nextTryMs: NOW + 1000 },
      }),
    );
    expect(t).toContain('health:        unhealthy: driver error: NVML failed: DRIVER_NOT_LOADED; events kept in memory only');
    expect(t).toContain('driver error:  NVML failed: DRIVER_NOT_LOADED\n');
    expect(t).toContain('versions:      driver unknown, CUDA unknown, NVML unknown\n');
    expect(t).toContain('durability:    NOT DURABLE');
    expect(t).toContain('local API:     retrying: 127.0.0.1:19400: address already in use\n');
    expect(t).toContain('\nno GPUs\n');
    expect(t).toContain('\nno active faults\n');
  });
  it('sourceLine names both cases', () => {
    expect(sourceLine({ live: true, api: 'http://x:1' })).toBe('live from the running agent at http://x:1');
    expect(sourceLine({ live: false, api: 'http://x:1', apiProblem: 'connection refused', stateDir: '/s' })).toMatch(/^NOT LIVE: /);
    expect(sourceLine({ live: false, api: 'http://x:1', apiProblem: 'held by another program: HTTP 404', stateDir: '/s', agentPid: 77 })).toBe(
      'NOT LIVE: no agent answered at http://x:1 (held by another program: HTTP 404); GPUs from a local snapshot, faults and backlog read from disk (/s); an agent process (pid 77) holds that state directory but its API did not answer',
    );
  });
});

describe('statusJson', () => {
  it('carries live, health, and driver/CUDA versions per device', () => {
    const j = statusJson(view({ activeFaults: [fault(0, 'warning')] }));
    expect(j).toMatchObject({ live: true, health: 'degraded', reasons: ['GPU 0: xid 79 warning'], nodeId: 'n1' });
    expect((j.devices as Array<Record<string, unknown>>)[1]).toMatchObject({ index: 1, driverVersion: '550.163.01', cudaVersion: '12.4' });
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
  });
});

describe('watchLoop', () => {
  it('runs frames at the interval until stopped and returns the last frame code', async () => {
    const ac = new AbortController();
    const sleeps: number[] = [];
    let n = 0;
    const code = await watchLoop({
      intervalMs: 2000,
      stop: ac.signal,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      frame: async () => {
        n++;
        if (n === 3) ac.abort(); // Ctrl-C while the third frame finishes
        return n === 3 ? 1 : 0;
      },
    });
    expect(n).toBe(3);
    expect(sleeps).toEqual([2000, 2000]);
    // no sleep after the stop; the answer is the last complete frame's
    expect(code).toBe(1);
  });
  it('a stop during a slow frame ends the loop at once', async () => {
    const ac = new AbortController();
    let frames = 0;
    const p = watchLoop({
      intervalMs: 10,
      stop: ac.signal,
      sleep: async () => undefined,
      frame: () => {
        frames++;
        return new Promise<number>(() => undefined); // never settles
      },
    });
    ac.abort();
    expect(await p).toBe(0);
    expect(frames).toBe(1);
  });
  it('a frame error (not a stop) propagates', async () => {
    const ac = new AbortController();
    await expect(
      watchLoop({ intervalMs: 1, stop: ac.signal, sleep: async () => undefined, frame: async () => Promise.reject(new Error('boom')) }),
    ).rejects.toThrow('boom');
  });
});

describe('runStatus --watch on a terminal', () => {
  it('clears and redraws each frame in place, with the refresh hint; ends on stop', async () => {
    const cfg = resolveConfig({
      flags: new Map([
        ['gpu-backend', 'fake'],
        ['state-dir', '/nonexistent-status-unit'],
      ]),
      env: {},
    });
    const stop = new AbortController();
    const frames: string[] = [];
    const code = await runStatus({
      cfg,
      api: 'http://127.0.0.1:9',
      json: false,
      watch: true,
      intervalMs: 200,
      stop: stop.signal,
      io: {
        stdout: (s) => {
          frames.push(s);
          if (frames.length === 2) stop.abort();
        },
        stderr: () => undefined,
        env: { NAVARCH_GPU_COUNT: '1' },
        isTTY: true,
      },
    });
    expect(code).toBe(0);
    expect(frames).toHaveLength(2);
    for (const f of frames) {
      expect(f.startsWith('\x1b[H\x1b[2Jsource:        NOT LIVE: no agent answered at http://127.0.0.1:9')).toBe(true);
      expect(f.endsWith('\nrefresh every 0.2 s; Ctrl-C exits\n')).toBe(true);
    }
  });
});

describe('reboot-aware escalation in status', () => {
  const fh = { file: '/var/lib/navarch-agent/fault-history.json', bootId: 'b3', boots: 3, faults: 1, escalated: 0, problem: null };
  it('says nothing while escalation works and nothing escalated', () => {
    expect(renderStatus(view({ faultHistory: fh }))).not.toMatch(/reboot escalation/);
    expect(renderStatus(view())).not.toMatch(/reboot escalation/);
  });
  it('counts escalated faults, and says why escalation cannot work', () => {
    expect(renderStatus(view({ faultHistory: { ...fh, escalated: 1 } }))).toMatch(
      /\nreboot escalation: +1 XID fault\(s\) escalated to replace: back after 2 reboots \(3 boots in the history\)\n/,
    );
    const problem = 'no writable state directory: the history is lost on restart, XIDs do not escalate across reboots';
    expect(renderStatus(view({ faultHistory: { ...fh, file: null, problem } }))).toContain(`reboot escalation: ${problem}`);
    expect(statusJson(view({ faultHistory: fh })).faultHistory).toEqual(fh);
    expect(statusJson(view()).faultHistory).toBeNull();
  });
});
