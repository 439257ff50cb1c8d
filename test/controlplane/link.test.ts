/**
 * End to end over real HTTP on loopback: AgentLink (client + loops) against the development
 * control plane. The event store is the in-memory test double; everything else is real, except
 * time: every link here runs on a manual clock (test/helpers/manual-clock.ts), so retries,
 * intervals, outages, deadlines and hook timeouts pass when the test moves the clock, not in
 * real sleeps. Hooks that must run long wait for a file the test writes.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { readTerminationMarker, TERMINATE_EXIT_CODE, type AgentLink, type TerminateInfo } from '../../src/controlplane/agent-link.js';
import { inventory, makeLink as makeLinkWith, testLogger, waitFor as waitReal } from './fixtures.js';
import { MemoryStore, xidInput } from './memory-store.js';
import { ManualClock } from '../helpers/manual-clock.js';

const cleanups: Array<() => Promise<void> | void> = [];
/** Links stop first, while the control planes they talk to still answer. */
const linkStops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of linkStops.splice(0).reverse()) await c();
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function devCp(opts: Parameters<typeof startDevControlPlane>[0] = {}): Promise<DevControlPlane> {
  const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 60, ...opts });
  cleanups.push(() => cp.close());
  return cp;
}

let clock: ManualClock;
beforeEach(() => {
  clock = new ManualClock();
});

/** A link (fixtures' makeLink) on this test's clock. */
function makeLink(...[url, over = {}, client = {}]: Parameters<typeof makeLinkWith>): ReturnType<typeof makeLinkWith> {
  return makeLinkWith(url, { clock, ...over }, client);
}

/** Waits for cond while moving this test's clock on (real I/O gets real turns between the steps). */
function waitFor(cond: () => boolean | Promise<boolean>, realTimeoutMs = 20_000, what = 'condition'): Promise<void> {
  return clock.until(what, cond, { realTimeoutMs });
}

function track(link: AgentLink): AgentLink {
  const c = clock;
  // The stop deadline runs on the clock: moved on while the link stops.
  linkStops.push(() => c.drive(link.stop({ deadlineMs: 2000 }), 100));
  return link;
}

describe('registration', () => {
  it('registers with the full inventory, every field arrives', async () => {
    const cp = await devCp();
    const { link } = makeLink(cp.url);
    track(link).start();
    await link.whenRegistered();
    const n = cp.node('node-a');
    expect(n).toBeDefined();
    const inv = inventory();
    expect(n!.provider).toBe('gcp');
    expect(n!.region).toBe('us-central1');
    expect(n!.zone).toBe('us-central1-a');
    expect(n!.instanceType).toBe('a3-highgpu-8g');
    expect(n!.metadata).toEqual({
      hostname: 'node-a.internal',
      internalIp: '10.1.2.3',
      externalIp: '34.5.6.7',
      kernelVersion: '6.8.0-45-generic',
      labels: { team: 'ml', rack: 'r12', pool: 'training' },
    });
    expect(n!.gpus).toEqual(
      inv.gpus.map((g) => ({
        index: g.index,
        uuid: g.uuid,
        name: g.name,
        pciBusId: g.pciBusId,
        memoryTotal: 85899345920n,
        driverVersion: '550.90.07',
        cudaVersion: '12.4',
      })),
    );
    expect(n!.status).toBe('active');
    // First heartbeat right after registration, with node and per-GPU metrics.
    await waitFor(() => (cp.node('node-a')?.heartbeats ?? 0) >= 1, 20_000, 'first heartbeat');
    const m = cp.node('node-a')!.lastMetrics!;
    expect(m.cpuUsagePercent).toBe(12.5);
    expect(m.memoryUsagePercent).toBe(40.25);
    expect(m.gpuMetrics.map((g) => [g.gpuIndex, g.temperature, g.powerUsage, g.utilizationPercent, g.memoryUsed])).toEqual([
      [0, 45, 300, 75.5, 42949672960n],
      [1, 50, 310, 80, 1024n],
    ]);
    // The first report follows registration at once and carries the check results.
    await waitFor(() => (cp.node('node-a')?.reports ?? 0) >= 1, 20_000, 'first report');
    expect(cp.node('node-a')!.lastResults.map((r) => r.checkName)).toEqual(['boot', 'nvml', 'navarch_agent']);
    expect(cp.node('node-a')!.lastResults.find((r) => r.checkName === 'navarch_agent')?.status).toBe('healthy');
    expect(cp.node('node-a')!.healthStatus).toBe('healthy');
    // The server counts a call before its answer reaches the link: wait for the link's own counters.
    await waitFor(() => link.status().heartbeatsSent >= 1 && link.status().reportsSent >= 1, 20_000, 'answers received');
    const st = link.status();
    expect(st.registered).toBe(true);
    expect(st.heartbeatIntervalMs).toBe(1000);
    expect(st.healthIntervalMs).toBe(60_000);
    expect(st.lastSuccessMs).not.toBeNull();
    expect(st.heartbeatsSent).toBeGreaterThanOrEqual(1);
    expect(st.reportsSent).toBeGreaterThanOrEqual(1);
    expect(st).toMatchObject({
      nodeId: 'node-a',
      url: cp.url,
      registrations: 1,
      configError: null,
      lastError: null,
      nodeStatus: 'NODE_STATUS_ACTIVE',
      pending: 0,
    });
  });

  it('an interval of 0 from the control plane falls back to the default (and absurd values are clamped)', async () => {
    const cp = await devCp({ heartbeatIntervalSeconds: 0, healthCheckIntervalSeconds: 10_000_000 });
    const { logger, lines } = testLogger();
    const { link } = makeLink(cp.url, { logger });
    track(link).start();
    await link.whenRegistered();
    expect(link.status().heartbeatIntervalMs).toBe(30_000);
    expect(link.status().healthIntervalMs).toBe(3_600_000);
    expect(lines.some((l) => String(l.msg).includes('out-of-range intervals'))).toBe(true);
    // The first heartbeat does not wait for the (default) interval.
    await waitFor(() => (cp.node('node-a')?.heartbeats ?? 0) >= 1, 20_000, 'first heartbeat');
  });

  it('retries registration with backoff until the control plane comes up', async () => {
    // Reserve a port, then start the control plane on it later.
    const probe = await startDevControlPlane();
    const port = probe.port;
    await probe.close();
    const { link } = makeLink(`http://127.0.0.1:${port}`);
    track(link).start();
    await waitFor(() => link.status().lastError !== null, 20_000, 'a failed attempt');
    expect(link.status().lastError!.code).toBe('unavailable');
    expect(link.status().registered).toBe(false);
    const cp = await devCp({ port });
    // The next try waits out its backoff on the clock.
    await clock.drive(link.whenRegistered());
    expect(cp.node('node-a')?.status).toBe('active');
  });

  it('HTTP 401 from a wrong token is a configuration error, logged loudly and retried slowly', async () => {
    const cp = await devCp({ authToken: 's3cret-token' });
    const { logger, lines } = testLogger();
    const attempts: number[] = [];
    const { link } = makeLink(
      cp.url,
      { logger, retry: { baseMs: 50, capMs: 200, configErrorMs: 2500 }, onRpc: (r) => r.method === 'RegisterNode' && attempts.push(clock.now()) },
      { token: 'wrong-token' },
    );
    track(link).start();
    await waitFor(() => link.status().configError !== null, 20_000, 'configuration error');
    expect(link.status().configError).toMatch(/configuration error \(unauthenticated\)/);
    expect(link.status().registered).toBe(false);
    const err = lines.find((l) => l.level === 50 && String(l.msg).includes('configuration error'));
    expect(err).toBeDefined();
    // The token is never logged.
    expect(JSON.stringify(lines)).not.toContain('wrong-token');
    // Slow retry: the second attempt comes configErrorMs (2.5 s +-10%) later, not after the
    // transient backoff (cap 200 ms).
    await waitFor(() => attempts.length >= 2, 20_000, 'second attempt');
    expect(attempts[1]! - attempts[0]!).toBeGreaterThanOrEqual(2000);
    expect(cp.calls().unauthorized ?? 0).toBeGreaterThanOrEqual(2);
    expect(cp.nodes()).toHaveLength(0);
  });

  it('the right token registers', async () => {
    const cp = await devCp({ authToken: 's3cret-token' });
    const { link } = makeLink(cp.url, {}, { token: 's3cret-token' });
    track(link).start();
    await link.whenRegistered();
    expect(cp.node('node-a')).toBeDefined();
    expect(cp.calls().unauthorized ?? 0).toBe(0);
  });

  it('a token rejected after registration (rotated on the control plane) is surfaced as a configuration error', async () => {
    const cp = await devCp({ authToken: 'old-token' });
    const { link } = makeLink(cp.url, {}, { token: 'old-token' });
    track(link).start();
    await link.whenRegistered();
    await cp.close();
    const cp2 = await startDevControlPlane({ port: cp.port, authToken: 'new-token', heartbeatIntervalSeconds: 1 });
    cleanups.push(() => cp2.close());
    await waitFor(() => link.status().configError !== null, 20_000, 'configuration error');
    expect(link.status().configError).toMatch(/unauthenticated/);
  });

  for (const httpVersion of ['1.1', '2'] as const) {
    it(`HTTP/${httpVersion}: a response that never comes: the deadline fires and the loop retries`, async () => {
      const conns: net.Socket[] = [];
      const server = net.createServer((s) => {
        conns.push(s);
        s.on('error', () => {});
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      cleanups.push(
        () =>
          new Promise<void>((r) => {
            for (const c of conns) c.destroy();
            server.close(() => r());
          }),
      );
      const port = (server.address() as net.AddressInfo).port;
      const { link } = makeLink(`http://127.0.0.1:${port}`, {}, { timeoutMs: 400, httpVersion });
      track(link).start();
      await waitFor(() => link.status().lastError !== null, 20_000, 'deadline');
      expect(link.status().lastError!.code).toBe('deadline_exceeded');
      // Retries: more connections (a timed-out request's socket is destroyed).
      const before = link.status().lastError!.atMs;
      await waitFor(() => link.status().lastError!.atMs > before, 20_000, 'a retry that also times out');
      if (httpVersion === '1.1') await waitFor(() => conns.length >= 3, 20_000, 'retries on new connections');
      expect(link.status().registered).toBe(false);
    });
  }

  it('refuses to start with an empty node id (configuration error) but keeps retrying', async () => {
    const cp = await devCp();
    const { link } = makeLink(cp.url, { inventory: () => ({ ...inventory(), nodeId: '' }) });
    track(link).start();
    await waitFor(() => link.status().configError !== null, 20_000, 'configuration error');
    expect(link.status().configError).toMatch(/node id is empty/);
    expect(cp.nodes()).toHaveLength(0);
  });
});

describe('health delivery', () => {
  it('an appended fatal XID is pushed at once (not on the health tick) and turns the node UNHEALTHY', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const latencies: number[] = [];
    const { link, store } = makeLink(cp.url, { onDeliveryLatency: (ms) => latencies.push(ms) });
    track(link).start();
    await link.whenRegistered();
    await waitFor(() => (cp.node('node-a')?.reports ?? 0) >= 1, 20_000, 'first report');
    await store.append(xidInput(3, 79));
    await waitFor(() => cp.events('node-a').length === 1, 20_000, 'event at the control plane');
    const ev = cp.events('node-a')[0]!;
    expect(ev.eventType).toBe('xid');
    expect(ev.system).toBe('DCGM_HEALTH_WATCH_DRIVER');
    expect(ev.gpuIndex).toBe(3);
    expect(ev.gpuUuid).toBe('GPU-00000003-aaaa-bbbb-cccc-000000000003');
    expect(ev.metrics.xid_code).toBe('79');
    expect(ev.metrics.count).toBe('1');
    expect(ev.metrics.severity).toBe('critical');
    expect(ev.metrics.action).toBe('reboot');
    expect(ev.metrics.event_id).toBe(store.appended.at(-1)!.id);
    expect(ev.rule).toBe('fatal-xid');
    expect(cp.node('node-a')!.status).toBe('unhealthy');
    await waitFor(() => store.pendingCount() === 0, 20_000, 'ack');
    expect(link.status().nodeStatus).toBe('NODE_STATUS_UNHEALTHY');
    expect(latencies).toHaveLength(1);
    // The push itself carried the agent's verdict.
    expect(cp.node('node-a')!.lastResults.find((r) => r.checkName === 'navarch_agent')?.status).toBe('unhealthy');
    // The next periodic report carries it too: health stays UNHEALTHY.
    const reports = cp.node('node-a')!.reports;
    link.reportNow();
    await waitFor(() => cp.node('node-a')!.reports > reports, 20_000, 'periodic report');
    expect(cp.node('node-a')!.healthStatus).toBe('unhealthy');
    expect(cp.node('node-a')!.lastResults.find((r) => r.checkName === 'navarch_agent')?.message).toContain('gpu3/xid/79');
    // Node-level events carry gpu_index -1 explicitly.
    await store.append({ ...xidInput(0, 31), gpuIndex: -1, gpuUuid: '', key: 'node/xid/31' });
    await waitFor(() => cp.events('node-a').length === 2, 20_000, 'node-level event');
    expect(cp.events('node-a')[1]!.gpuIndex).toBe(-1);
  });

  it('a malformed event or check result does not block the queue', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const { link, store } = makeLink(cp.url, {
      checks: () => [{ name: 'odd', status: 'weird' as never, message: 42 as never, details: { n: 7 as never } }],
    });
    track(link).start();
    await link.whenRegistered();
    // The store validates what it is given, so the malformed event is made on the way out, as a
    // record written by another version could arrive: a NaN time the wire converter must survive.
    const pendingOf = store.pending.bind(store);
    store.pending = (limit?: number) =>
      pendingOf(limit).map((e) => (e.metrics.xid_code === '13' ? { ...e, timeMs: Number.NaN, firstTimeMs: Number.NaN, lastTimeMs: Number.NaN } : e));
    await store.append(xidInput(0, 13, { fault: 'none' }));
    await store.append(xidInput(1, 79));
    await waitFor(() => store.pendingCount() === 0, 20_000, 'both delivered');
    expect(cp.events('node-a').map((e) => e.metrics.xid_code)).toEqual(['13', '79']);
    expect(cp.node('node-a')!.status).toBe('unhealthy');
    link.reportNow();
    await waitFor(() => cp.node('node-a')!.lastResults.some((r) => r.checkName === 'odd'), 20_000, 'periodic report');
    const odd = cp.node('node-a')!.lastResults.find((r) => r.checkName === 'odd');
    expect(odd).toMatchObject({ status: 'unknown', message: '42', details: { n: '7' } });
  });

  it('a non-fatal XID only degrades; policy keys stay plain integers', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    // The control plane's policy judges here (the agent's store holds code 43 as critical).
    const { link, store } = makeLink(cp.url, { verdict: 'policy' });
    track(link).start();
    await link.whenRegistered();
    await store.append(xidInput(1, 43 + 0, { metrics: { xid_code: ' 8 ' } }));
    await waitFor(() => cp.events('node-a').length === 1, 20_000, 'event');
    expect(cp.events('node-a')[0]!.metrics.xid_code).toBe('8');
    expect(cp.events('node-a')[0]!.rule).toBe('recoverable-xid');
    await waitFor(() => cp.node('node-a')!.healthStatus === 'degraded', 20_000, 'degraded');
    expect(cp.node('node-a')!.status).toBe('active');
  });

  const OUTAGE_MS = Number(process.env.CP_OUTAGE_MS ?? 4000);
  it(`control plane down for ${OUTAGE_MS} ms while events keep coming: all delivered, none lost, per-GPU order kept`, async () => {
    const cp = await devCp();
    const port = cp.port;
    const { link, store } = makeLink(cp.url, { retry: { baseMs: 50, capMs: 500, configErrorMs: 60_000 } });
    track(link).start();
    await link.whenRegistered();
    let n = 0;
    const perGpu = new Map<number, number>();
    const appendSome = async (k: number): Promise<void> => {
      for (let i = 0; i < k; i++) {
        const gpu = n % 4;
        const seq = (perGpu.get(gpu) ?? 0) + 1;
        perGpu.set(gpu, seq);
        n++;
        await store.append(xidInput(gpu, 13, { key: `gpu${gpu}/xid/13/${seq}`, metrics: { xid_code: '13', seq: String(seq) }, fault: 'none' }));
      }
    };
    await appendSome(20);
    await waitFor(() => store.pendingCount() === 0, 20_000, 'first batch acked');
    const before = cp.events('node-a');
    await cp.close();
    // Outage: events keep coming, for OUTAGE_MS on the link's clock (its retries wait on it).
    const outageEnd = clock.now() + OUTAGE_MS;
    while (clock.now() < outageEnd) {
      await appendSome(5);
      await clock.advance(100);
      await new Promise((r) => setTimeout(r, 1)); // a real turn for the failing calls
    }
    expect(store.pendingCount()).toBeGreaterThan(0);
    expect(link.status().lastError).not.toBeNull();
    // Back, with its state intact (same process, same records).
    const cp2 = await startDevControlPlane({ port, heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 60 });
    cleanups.push(() => cp2.close());
    await waitFor(() => store.pendingCount() === 0, 30_000, 'all acked');
    // The restarted control plane forgot the node: the link re-registered and delivered the rest.
    const received = [...before, ...cp2.events('node-a')];
    const ids = received.map((e) => e.metrics.event_id);
    const unique = new Set(ids);
    expect(unique.size).toBe(n);
    for (const e of store.appended) expect(unique.has(e.id)).toBe(true);
    // Per-GPU order: seq strictly increasing per GPU in reception order (duplicates allowed only as re-sends).
    const last = new Map<number, number>();
    for (const e of received) {
      if (e.metrics.reasserted === 'true') continue;
      const seq = Number(e.metrics.seq);
      const prev = last.get(e.gpuIndex) ?? 0;
      expect(seq).toBeGreaterThanOrEqual(prev);
      last.set(e.gpuIndex, seq);
    }
    void cp;
  }, 90_000);

  it('over h2c the link survives a control-plane restart (new HTTP/2 session) and delivers what piled up', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const port = cp.port;
    const { link, store } = makeLink(cp.url, {}, { httpVersion: '2' });
    track(link).start();
    await link.whenRegistered();
    await store.append(xidInput(0, 13, { fault: 'none' }));
    await waitFor(() => cp.events('node-a').length === 1, 20_000, 'first event');
    await cp.close();
    for (let i = 0; i < 5; i++) await store.append(xidInput(1, 13, { fault: 'none', key: `gpu1/xid/13/${i}`, metrics: { xid_code: '13', seq: String(i) } }));
    await waitFor(() => link.status().lastError !== null, 20_000, 'failure seen');
    const cp2 = await startDevControlPlane({ port, heartbeatIntervalSeconds: 1, healthCheckIntervalSeconds: 3600 });
    cleanups.push(() => cp2.close());
    await waitFor(() => store.pendingCount() === 0, 30_000, 'drained');
    expect(
      cp2
        .events('node-a')
        .filter((e) => e.metrics.seq !== undefined)
        .map((e) => e.metrics.seq),
    ).toEqual(['0', '1', '2', '3', '4']);
    expect(cp2.node('node-a')?.registrations).toBe(1);
  });

  it('the control plane restarts and forgets the node: re-registration and fault re-assertion', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const { link, store } = makeLink(cp.url);
    track(link).start();
    await link.whenRegistered();
    await store.append(xidInput(2, 79));
    await waitFor(() => cp.node('node-a')?.status === 'unhealthy', 20_000, 'unhealthy');
    await waitFor(() => store.pendingCount() === 0, 20_000, 'acked');
    cp.forget('node-a');
    // The next heartbeat (1 s) gets NotFound -> re-register -> re-assert.
    await waitFor(() => (cp.node('node-a')?.registrations ?? 0) >= 1, 20_000, 're-registration');
    await waitFor(() => cp.node('node-a')?.status === 'unhealthy', 20_000, 'unhealthy again');
    const reasserted = cp.events('node-a').filter((e) => e.metrics.reasserted === 'true');
    expect(reasserted).toHaveLength(1);
    expect(reasserted[0]!.metrics.xid_code).toBe('79');
    expect(reasserted[0]!.gpuIndex).toBe(2);
    expect(cp.node('node-a')!.lastResults.find((r) => r.checkName === 'navarch_agent')?.status).toBe('unhealthy');
    expect(link.status().registrations).toBe(2);
  });

  it('stop() after the control plane forgot the node: no hot retry loop of the final report', async () => {
    const cp = await devCp({ heartbeatIntervalSeconds: 3600, healthCheckIntervalSeconds: 3600 });
    const { link, store } = makeLink(cp.url);
    track(link).start();
    await link.whenRegistered();
    await waitFor(() => link.status().heartbeatsSent >= 1 && !link.status().pending, 20_000, 'first heartbeat');
    cp.forget('node-a');
    await store.append(xidInput(1, 48));
    const before = cp.calls().ReportHealth ?? 0;
    await link.stop({ deadlineMs: 3000 });
    // The final report gets NotFound once; the node is unknown, so the events stay in the store
    // for the next start instead of being re-sent every few milliseconds until the deadline.
    expect((cp.calls().ReportHealth ?? 0) - before).toBeLessThanOrEqual(3);
    expect(store.pendingCount()).toBeGreaterThan(0);
  });

  it('after an agent restart with active faults, they are reported right after registering', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const store = new MemoryStore();
    await store.append(xidInput(5, 48));
    await store.ack(store.pending()); // delivered by the previous process
    const { link } = makeLink(cp.url, { store });
    track(link).start();
    await link.whenRegistered();
    await waitFor(() => cp.node('node-a')?.status === 'unhealthy', 20_000, 'unhealthy after restart');
    expect(cp.events('node-a')[0]!.metrics.reasserted).toBe('true');
  });

  it('stop() flushes pending events and sends a final report within the deadline', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const { link, store } = makeLink(cp.url);
    link.start();
    await link.whenRegistered();
    await waitFor(() => (cp.node('node-a')?.reports ?? 0) >= 1, 20_000, 'first report');
    const reports = cp.node('node-a')!.reports;
    const appends = [];
    for (let i = 0; i < 50; i++) appends.push(store.append(xidInput(i % 2, 13, { fault: 'none', key: `gpu${i % 2}/xid/13/${i}` })));
    await Promise.all(appends);
    await link.stop({ deadlineMs: 10_000 });
    expect(store.pendingCount()).toBe(0);
    expect(cp.events('node-a')).toHaveLength(50);
    expect(cp.node('node-a')!.reports).toBeGreaterThan(reports);
    expect(link.status().registered).toBe(false);
  });

  it('stop() waits for an ack still being written, leaving the event loop free meanwhile', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    let release: () => void = () => {};
    const written = new Promise<void>((r) => (release = r));
    class SlowAckStore extends MemoryStore {
      override async ack(sent: Parameters<MemoryStore['ack']>[0]): Promise<void> {
        await written;
        await super.ack(sent);
      }
    }
    const store = new SlowAckStore();
    const { link } = makeLink(cp.url, { store });
    track(link).start();
    await link.whenRegistered();
    await store.append(xidInput(0, 13, { fault: 'none' }));
    await waitFor(() => cp.events('node-a').length === 1, 20_000, 'delivered, ack still being written');
    expect(store.pendingCount()).toBe(1);
    const reports = cp.node('node-a')!.reports;
    const stopping = link.stop({ deadlineMs: 10_000 });
    // Polled on real timers (the clock stands still): they run only if the shutdown flush waits
    // for the ack instead of spinning.
    await waitReal(() => cp.node('node-a')!.reports > reports, 20_000, 'final report sent, ack still being written');
    release();
    await stopping;
    expect(store.pendingCount()).toBe(0);
    expect(cp.events('node-a')).toHaveLength(1);
  });
});

describe('commands', () => {
  it('RUN_DIAGNOSTIC commands delivered together run one sweep at a time, and each is answered', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    let running = 0;
    let most = 0;
    let done = 0;
    const { link } = makeLink(cp.url, {
      diagnostics: async (p) => {
        running += 1;
        most = Math.max(most, running);
        await clock.sleep(200);
        running -= 1;
        done += 1;
        return [{ name: `diag_${p.test}`, status: 'healthy', message: 'ok' }];
      },
    });
    track(link).start();
    await link.whenRegistered();
    for (const t of ['a', 'b', 'c']) expect(cp.issueCommand('node-a', 'run_diagnostic', { test: t }).queued).toBe(true);
    await waitFor(() => done === 3, 20_000, 'three sweeps');
    expect(most).toBe(1);
  });

  it('RUN_DIAGNOSTIC asks the diagnostic provider and reports its results as check results', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    let asked: Record<string, string> | null = null;
    const { link } = makeLink(cp.url, {
      diagnostics: async (p) => {
        asked = p;
        return [
          { name: 'diag_memory', status: 'healthy', message: 'ok' },
          { name: 'diag_nvlink', status: 'degraded', message: 'link 3 down' },
        ];
      },
    });
    track(link).start();
    await link.whenRegistered();
    const { queued } = cp.issueCommand('node-a', 'run_diagnostic', { test: 'all' });
    expect(queued).toBe(true);
    await waitFor(() => cp.node('node-a')!.lastResults.some((r) => r.checkName === 'diag_nvlink'), 20_000, 'diagnostic results');
    expect(asked).toEqual({ test: 'all' });
    const r = cp.node('node-a')!.lastResults.find((x) => x.checkName === 'diag_nvlink')!;
    expect(r.status).toBe('degraded');
    expect(r.details.command_id).toBeDefined();
    expect(cp.node('node-a')!.healthStatus).toBe('degraded');
  });

  it('stop() while a TERMINATE drain hook runs returns once the hook is done, not at its deadline', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const dir = mkdtempSync(join(tmpdir(), 'navarch-term-stop-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'drain.sh');
    // Runs until the test writes "release" (after stop() was called).
    writeFileSync(hook, `#!/bin/sh\ntouch "${dir}/started"\nwhile [ ! -e "${dir}/release" ]; do sleep 0.02; done\n`);
    chmodSync(hook, 0o755);
    let info: TerminateInfo | null = null;
    const { link } = makeLink(cp.url, { stateDir: join(dir, 'state'), hooks: { drain: hook }, onTerminate: (i) => (info = i) });
    track(link).start();
    await link.whenRegistered();
    cp.issueCommand('node-a', 'terminate', { reason: 'scale-down' });
    await waitFor(() => existsSync(join(dir, 'started')), 20_000, 'drain hook started');
    const t0 = clock.now();
    const stopping = link.stop({ deadlineMs: 15_000 });
    writeFileSync(join(dir, 'release'), '');
    // The clock moves 1 ms per step: reaching the deadline would take 15,000 steps.
    await clock.drive(stopping, 1);
    // Before: stop() waited for the TERMINATE command, which waited for stop() to finish: the
    // whole deadline went by.
    expect(clock.now() - t0).toBeLessThan(10_000);
    expect(info).not.toBeNull();
  }, 60_000);

  it('TERMINATE: drain hook, final report, marker file, then the owner is told to exit', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const dir = mkdtempSync(join(tmpdir(), 'cp-term-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'drain.sh');
    writeFileSync(hook, `#!/bin/sh\necho "$1 $NAVARCH_COMMAND_TYPE $NAVARCH_PARAM_REASON" > "${dir}/hook.out"\n`);
    chmodSync(hook, 0o755);
    let info: TerminateInfo | null = null;
    const { link, store } = makeLink(cp.url, {
      stateDir: join(dir, 'state'),
      hooks: { drain: hook },
      onTerminate: (i) => {
        info = i;
      },
    });
    track(link).start();
    await link.whenRegistered();
    await store.append(xidInput(0, 13, { fault: 'none' }));
    cp.issueCommand('node-a', 'terminate', { reason: 'scale-down' });
    await waitFor(() => info !== null, 20_000, 'terminate');
    expect(info!.exitCode).toBe(TERMINATE_EXIT_CODE);
    expect(readFileSync(join(dir, 'hook.out'), 'utf8').trim()).toBe('terminate TERMINATE scale-down');
    expect(store.pendingCount()).toBe(0);
    expect(cp.node('node-a')!.lastResults.some((r) => r.checkName === 'agent' && r.message.includes('terminating'))).toBe(true);
    const marker = readTerminationMarker(join(dir, 'state'));
    expect(marker?.nodeId).toBe('node-a');
    expect(link.status().terminating).toBe(true);
    // A restarted agent finds the marker and does not re-register as healthy.
    const regs = cp.node('node-a')!.registrations;
    const again = makeLink(cp.url, { stateDir: join(dir, 'state') }).link;
    track(again).start();
    await clock.advance(800);
    expect(again.status().terminated?.commandId).toBe(marker!.commandId);
    expect(again.status().registered).toBe(false);
    expect(cp.node('node-a')!.registrations).toBe(regs);
    expect(existsSync(info!.markerPath!)).toBe(true);
  });

  it('CORDON / DRAIN / UNCORDON (delivered on request) update local state and run hooks; unknown types are skipped', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const dir = mkdtempSync(join(tmpdir(), 'cp-cordon-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'hook.sh');
    writeFileSync(hook, `#!/bin/sh\necho "$1" >> "${dir}/calls"\n`);
    chmodSync(hook, 0o755);
    const { logger, lines } = testLogger();
    const { link } = makeLink(cp.url, { logger, hooks: { cordon: hook, drain: hook } });
    track(link).start();
    await link.whenRegistered();
    // Navarch applies these on the control plane only ...
    expect(cp.issueCommand('node-a', 'cordon').queued).toBe(false);
    expect(cp.node('node-a')!.status).toBe('cordoned');
    // ... so force delivery to exercise the agent side.
    cp.issueCommand('node-a', 'cordon', {}, { queue: true });
    await waitFor(() => link.status().cordoned, 20_000, 'cordoned');
    cp.issueCommand('node-a', 'drain', {}, { queue: true });
    await waitFor(() => link.status().draining, 20_000, 'draining');
    cp.issueCommand('node-a', 'uncordon', {}, { queue: true });
    await waitFor(() => !link.status().cordoned && !link.status().draining, 20_000, 'uncordoned');
    await waitFor(() => existsSync(join(dir, 'calls')) && readFileSync(join(dir, 'calls'), 'utf8').split('\n').length >= 4, 20_000, 'hooks');
    expect(readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n')).toEqual(['cordon', 'drain', 'uncordon']);
    cp.issueCommand('node-a', 99 as never, {}, { queue: true });
    await waitFor(() => lines.some((l) => String(l.msg).includes('unknown command type')), 20_000, 'unknown skipped');
    expect(link.status().registered).toBe(true);
  });
  it('a long drain does not block polling: a command issued meanwhile is handled while the hook runs', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const dir = mkdtempSync(join(tmpdir(), 'cp-slow-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'slow.sh');
    // Runs until the test writes "release".
    writeFileSync(hook, `#!/bin/sh\nwhile [ ! -e "${dir}/release" ]; do sleep 0.02; done\necho done > "${dir}/drained"\n`);
    chmodSync(hook, 0o755);
    let diagAt = 0;
    const { link } = makeLink(cp.url, {
      hooks: { drain: hook },
      diagnostics: async () => {
        diagAt = Date.now();
        return [{ name: 'diag', status: 'healthy', message: 'ok' }];
      },
    });
    track(link).start();
    await link.whenRegistered();
    cp.issueCommand('node-a', 'drain', {}, { queue: true });
    await waitFor(() => link.status().draining, 20_000, 'draining');
    cp.issueCommand('node-a', 'run_diagnostic');
    await waitFor(() => diagAt > 0, 20_000, 'diagnostic during the drain');
    expect(existsSync(join(dir, 'drained'))).toBe(false);
    writeFileSync(join(dir, 'release'), '');
    await waitFor(() => existsSync(join(dir, 'drained')), 30_000, 'drain hook finished');
  });

  it('a hook that overruns its deadline is killed (bounded in time)', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    const dir = mkdtempSync(join(tmpdir(), 'cp-hang-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const hook = join(dir, 'hang.sh');
    writeFileSync(hook, `#!/bin/sh\nexec sleep 600\n`);
    chmodSync(hook, 0o755);
    const { logger, lines } = testLogger();
    const { link } = makeLink(cp.url, { logger, hooks: { cordon: hook, timeoutMs: 500 } });
    track(link).start();
    await link.whenRegistered();
    cp.issueCommand('node-a', 'cordon', {}, { queue: true });
    await waitFor(() => lines.some((l) => l.msg === 'cordon hook failed'), 20_000, 'hook killed');
    const l = lines.find((x) => x.msg === 'cordon hook failed')!;
    expect(l.timedOut).toBe(true);
    expect(l.signal).toBe('SIGTERM');
    expect(link.status().cordoned).toBe(true);
  });
  it('TERMINATE with exit=false drains but keeps the agent running', async () => {
    const cp = await devCp({ healthCheckIntervalSeconds: 3600 });
    let terminated = false;
    const { link } = makeLink(cp.url, { onTerminate: () => (terminated = true) });
    track(link).start();
    await link.whenRegistered();
    cp.issueCommand('node-a', 'terminate', { exit: 'false' });
    await waitFor(() => cp.node('node-a')!.lastResults.some((r) => r.checkName === 'agent' && r.message.includes('exit=false')), 20_000, 'report');
    expect(terminated).toBe(false);
    expect(link.status()).toMatchObject({ registered: true, cordoned: true, draining: true, terminating: false });
  });
});
