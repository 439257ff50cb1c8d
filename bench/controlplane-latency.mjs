#!/usr/bin/env node
/**
 * Control-plane delivery benchmark (needs `npm run build` first; runs the compiled dist/).
 *
 *   node bench/controlplane-latency.mjs [--events 1000] [--mode isolated|burst] [--http 1.1|2]
 *                                       [--fsync true|false] [--outage-ms 0] [--json]
 *
 * Latency: from just before EventStore.append() (durable store, fsync on by default) to the
 * moment the development control plane's ReportHealth handler has the event, over real HTTP on
 * loopback. "isolated" appends one event, waits for it and its acknowledgement (the push path's
 * latency for sparse events); "burst"
 * appends all events back to back (batching under load).
 *
 * --outage-ms N: the long outage run: the control plane is down for N ms while events keep
 * coming (20/s), then comes back; reports events lost (must be 0) and the time to drain.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const dist = new URL('../dist/', import.meta.url);
let mods;
try {
  mods = await Promise.all([
    import(new URL('controlplane/dev-server.js', dist).href),
    import(new URL('controlplane/client.js', dist).href),
    import(new URL('controlplane/agent-link.js', dist).href),
    import(new URL('store/event-store.js', dist).href),
  ]);
} catch (e) {
  console.error(`controlplane-latency: cannot load dist/ (${e.code ?? e.message}); run "npm run build" first`);
  process.exit(2);
}
const [{ startDevControlPlane }, { createControlPlaneClient }, { AgentLink }, { openEventStore }] = mods;

const { values: a } = parseArgs({
  options: {
    events: { type: 'string', default: '1000' },
    mode: { type: 'string', default: 'isolated' },
    http: { type: 'string', default: '1.1' },
    fsync: { type: 'string', default: 'true' },
    'outage-ms': { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(a.events);
const outageMs = Number(a['outage-ms']);
if (!Number.isInteger(N) || N < 1 || N > 1_000_000) throw new Error(`--events must be 1..1000000, got ${a.events}`);
if (!['isolated', 'burst'].includes(a.mode)) throw new Error(`--mode must be isolated or burst`);
if (!['1.1', '2'].includes(a.http)) throw new Error(`--http must be 1.1 or 2`);

const dir = mkdtempSync(join(tmpdir(), 'cp-bench-'));
const store = await openEventStore({ dir, fsync: a.fsync !== 'false', maxEvents: Math.max(10_000, N * 2), bootId: 'bench' });
let cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
const port = cp.port;
const inv = {
  nodeId: 'bench-node', provider: 'bench', region: 'r', zone: 'z', instanceType: 't', hostname: 'bench',
  internalIp: '', externalIp: '', kernelVersion: '', gpus: [{ index: 0, uuid: 'GPU-0', name: 'fake', pciBusId: '00000000:41:00.0', memoryTotalBytes: 1, driverVersion: '', cudaVersion: '' }],
};
const link = new AgentLink({
  client: createControlPlaneClient({ url: cp.url, httpVersion: a.http, timeoutMs: 5000 }),
  store,
  inventory: () => inv,
  commandPollIntervalMs: 3_600_000,
  retry: { baseMs: 100, capMs: 2000 },
});
link.start();
await link.whenRegistered();

// Resolve a waiter when the link's ack of a batch is written (no polling: it would eat CPU).
let ackWaiter = null;
const origAck = store.ack.bind(store);
store.ack = async (sent) => {
  await origAck(sent);
  if (store.pendingCount() === 0) ackWaiter?.();
};
const t0 = new Map(); // seq -> hrtime ns
const lat = []; // ms
let received = 0;
const waiters = new Map();
const hook = (c) =>
  c.onEvent((ev) => {
    const seq = Number(ev.metrics.bench_seq);
    const start = t0.get(seq);
    if (start === undefined) return;
    t0.delete(seq);
    lat.push(Number(ev.receivedAtNs - start) / 1e6);
    received++;
    waiters.get(seq)?.();
  });
hook(cp);

const input = (seq) => ({
  type: 'xid', system: 'DRIVER', gpuIndex: seq % 8, gpuUuid: `GPU-${seq % 8}`, metrics: { xid_code: '13', bench_seq: String(seq) },
  message: 'bench', timeMs: Date.now(), severity: 'warning', action: 'none', citation: 'bench', source: 'fake',
  key: `bench/${seq}`, fault: 'none',
});

const pct = (xs, p) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

let result;
const cpu0 = process.cpuUsage();
const wall0 = process.hrtime.bigint();
if (outageMs > 0) {
  // Warm-up, then the outage.
  let seq = 0;
  const appended = new Set();
  const push = async () => {
    seq++;
    t0.set(seq, process.hrtime.bigint());
    appended.add(seq);
    await store.append(input(seq));
  };
  for (let i = 0; i < 20; i++) await push();
  while (received < 20) await new Promise((r) => setTimeout(r, 10));
  await cp.close();
  const end = Date.now() + outageMs;
  while (Date.now() < end) {
    await push();
    await new Promise((r) => setTimeout(r, 50));
  }
  const back = Date.now();
  cp = await startDevControlPlane({ port, heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
  hook(cp);
  while (received < appended.size && Date.now() - back < 120_000) await new Promise((r) => setTimeout(r, 20));
  const drainMs = Date.now() - back;
  // Acks of the last batches are written just after the answers arrive.
  while (store.pendingCount() > 0 && Date.now() - back < 120_000) await new Promise((r) => setTimeout(r, 20));
  result = {
    bench: 'controlplane-outage', outageMs, appended: appended.size, delivered: received, lost: appended.size - received,
    drainMs, pendingAfter: store.pendingCount(),
  };
} else if (a.mode === 'isolated') {
  for (let seq = 1; seq <= N; seq++) {
    const got = new Promise((r) => waiters.set(seq, r));
    t0.set(seq, process.hrtime.bigint());
    await store.append(input(seq));
    await got;
    waiters.delete(seq);
    // Sparse events: the next one comes after this one was acknowledged (not mid-call).
    if (store.pendingCount() > 0) await new Promise((r) => (ackWaiter = r));
    ackWaiter = null;
  }
} else {
  const all = [];
  for (let seq = 1; seq <= N; seq++) {
    all.push(new Promise((r) => waiters.set(seq, r)));
    t0.set(seq, process.hrtime.bigint());
    await store.append(input(seq));
  }
  await Promise.all(all);
}
const cpu = process.cpuUsage(cpu0);
if (!result) {
  result = {
    bench: 'controlplane-latency', mode: a.mode, http: a.http, fsync: a.fsync !== 'false', events: N,
    p50Ms: +pct(lat, 50).toFixed(3), p99Ms: +pct(lat, 99).toFixed(3), maxMs: +Math.max(...lat).toFixed(3),
    reports: cp.calls().ReportHealth ?? 0,
    // CPU time of this process (agent side + control plane + store) per event: less sensitive
    // to a loaded machine than the wall-clock percentiles.
    cpuUsPerEvent: Math.round(((cpu.user + cpu.system) / N) * 10) / 10,
    wallMsPerEvent: +(Number(process.hrtime.bigint() - wall0) / 1e6 / N).toFixed(3),
    loadavg1: +os.loadavg()[0].toFixed(2),
  };
}
await link.stop({ deadlineMs: 5000 });
await cp.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
if (a.json) console.log(JSON.stringify(result));
else console.log(Object.entries(result).map(([k, v]) => `${k}=${v}`).join(' '));
