#!/usr/bin/env node
/**
 * Control-plane delivery benchmark (needs `npm run build` first; runs the compiled dist/).
 *
 *   node bench/controlplane-latency.mjs [--events 1000] [--mode isolated|burst] [--http 1.1|2]
 *                                       [--fsync true|false] [--cp process|inline] [--outage-ms 0] [--json]
 *
 * --cp process (default): the development control plane runs in its own process
 * (bench/controlplane-devcp-child.mjs), as Navarch's Go control plane does in production, so its
 * CPU and GC do not add to the agent side's. --cp inline: the old variant, everything in this
 * process. Reception times are process.hrtime.bigint() (CLOCK_MONOTONIC) in both cases.
 *
 * Stages (p50/p99 each, ms): append->durable (the store's fsync'd commit, onAppend), durable->send
 * (the link's pump builds the request and calls ReportHealth), send->recv (client, loopback HTTP,
 * server parse, to the handler), recv->ack (handler to the answer decoded on the agent side).
 *
 * Latency: from just before EventStore.append() (durable store, fsync on by default) to the
 * moment the development control plane's ReportHealth handler has the event, over real HTTP on
 * loopback. "isolated" appends one event, waits for it and its acknowledgement (the push path's
 * latency for sparse events); "burst"
 * appends all events back to back (batching under load).
 *
 * --outage-ms N [--outages K]: the outage run: K times (default 1), the control plane is down
 * for a uniformly random 0.5N..N ms while events keep coming (20/s), then comes back. The link
 * runs with its default retry policy. Reports events lost (must be 0) and, per outage, the time
 * from the control plane listening again to the first and to the last held event received
 * (p50/p99/max over the outages).
 *
 * BENCH_LOG=1 writes the link's log (pino, debug) to stderr.
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
    import(new URL('devcp/dev-server.js', dist).href),
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
    outages: { type: 'string', default: '1' },
    cp: { type: 'string', default: 'process' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(a.events);
const outageMs = Number(a['outage-ms']);
const outages = Number(a.outages);
if (!Number.isInteger(outages) || outages < 1 || outages > 100) throw new Error(`--outages must be 1..100, got ${a.outages}`);
if (!Number.isInteger(N) || N < 1 || N > 1_000_000) throw new Error(`--events must be 1..1000000, got ${a.events}`);
if (!['isolated', 'burst'].includes(a.mode)) throw new Error(`--mode must be isolated or burst`);
if (!['1.1', '2'].includes(a.http)) throw new Error(`--http must be 1.1 or 2`);
if (!['process', 'inline'].includes(a.cp)) throw new Error(`--cp must be process or inline`);

const dir = mkdtempSync(join(tmpdir(), 'cp-bench-'));
const store = await openEventStore({ dir, fsync: a.fsync !== 'false', maxEvents: Math.max(10_000, N * 2), bootId: 'bench' });
// The control plane, inline or in a child process; the same small interface for both.
const onRecv = []; // (seq, ns) listeners
const recvd = (seq, ns) => {
  for (const l of onRecv) l(seq, ns);
};
async function startInline(port) {
  const c = await startDevControlPlane({ port, heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
  c.onEvent((ev) => {
    if (ev.metrics.bench_seq !== undefined) recvd(Number(ev.metrics.bench_seq), ev.receivedAtNs);
  });
  return { url: c.url, port: c.port, close: () => c.close(), calls: async () => ({ calls: c.calls(), connections: c.connections?.() ?? null }) };
}
let child = null;
const childReplies = [];
async function childAsk(msg, op) {
  const got = new Promise((resolve, reject) => {
    childReplies.push({ op, resolve, reject });
  });
  child.send(msg);
  return got;
}
async function startChild(port) {
  if (!child) {
    const { fork } = await import('node:child_process');
    child = fork(new URL('./controlplane-devcp-child.mjs', import.meta.url), [], {
      execArgv: process.env.BENCH_CP_EXECARGV ? process.env.BENCH_CP_EXECARGV.split(' ') : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`control-plane child exited (${code})`)));
      child.on('message', (m) => {
        if (m.op === 'ready') resolve();
        else if (m.op === 'ev') {
          if (m.seq !== null) recvd(Number(m.seq), BigInt(m.ns));
        } else {
          const w = childReplies.findIndex((r) => r.op === m.op || m.op === 'error');
          if (w >= 0) {
            const [r] = childReplies.splice(w, 1);
            if (m.op === 'error') r.reject(new Error(m.message));
            else r.resolve(m);
          }
        }
      });
    });
  }
  const s = await childAsk({ op: 'start', port }, 'started');
  return {
    url: s.url,
    port: s.port,
    close: () => childAsk({ op: 'stop' }, 'stopped'),
    calls: async () => {
      const r = await childAsk({ op: 'calls' }, 'calls');
      return { calls: r.calls, connections: r.connections };
    },
  };
}
const startCp = (port) => (a.cp === 'process' ? startChild(port) : startInline(port));
let cp = await startCp(0);
const port = cp.port;
const inv = {
  nodeId: 'bench-node',
  provider: 'bench',
  region: 'r',
  zone: 'z',
  instanceType: 't',
  hostname: 'bench',
  internalIp: '',
  externalIp: '',
  kernelVersion: '',
  gpus: [{ index: 0, uuid: 'GPU-0', name: 'fake', pciBusId: '00000000:41:00.0', memoryTotalBytes: 1, driverVersion: '', cudaVersion: '' }],
};
// Stage timestamps (hrtime ns) per seq: t0 before append, durable at onAppend, send when the
// link calls ReportHealth, recv at the control plane's handler, ack when the answer is decoded.
const T = { durable: new Map(), send: new Map(), recv: new Map(), ack: new Map() };
store.onAppend((r) => {
  const s = r.event.metrics.bench_seq;
  if (s !== undefined) T.durable.set(Number(s), process.hrtime.bigint());
});
const client = createControlPlaneClient({ url: cp.url, httpVersion: a.http, timeoutMs: 5000 });
const origReport = client.rpc.reportHealth.bind(client.rpc);
client.rpc.reportHealth = async (req, o) => {
  const seqs = [];
  for (const ev of req.events) if (ev.metrics.bench_seq !== undefined && !ev.metrics.reasserted) seqs.push(Number(ev.metrics.bench_seq));
  const ts = process.hrtime.bigint();
  for (const q of seqs) if (!T.send.has(q)) T.send.set(q, ts);
  const res = await origReport(req, o);
  const ta = process.hrtime.bigint();
  for (const q of seqs) if (!T.ack.has(q)) T.ack.set(q, ta);
  return res;
};
let failedRpcs = 0;
const link = new AgentLink({
  logger: process.env.BENCH_LOG ? (await import('pino')).default({ level: 'debug' }, process.stderr) : undefined,
  onRpc: (i) => {
    if (!i.ok) failedRpcs++;
  },
  client,
  store,
  inventory: () => inv,
  commandPollIntervalMs: 3_600_000,
  // The outage run measures the shipped retry policy; the latency runs never retry.
  ...(outageMs > 0 ? {} : { retry: { baseMs: 100, capMs: 2000 } }),
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
onRecv.push((seq, ns) => {
  const start = t0.get(seq);
  if (start === undefined) return;
  t0.delete(seq);
  T.recv.set(seq, ns);
  lat.push(Number(ns - start) / 1e6);
  received++;
  waiters.get(seq)?.();
});
const T0 = new Map(); // seq -> t0, kept for the stage breakdown

const input = (seq) => ({
  type: 'xid',
  system: 'DRIVER',
  gpuIndex: seq % 8,
  gpuUuid: `GPU-${seq % 8}`,
  metrics: { xid_code: '13', bench_seq: String(seq) },
  message: 'bench',
  timeMs: Date.now(),
  severity: 'warning',
  action: 'none',
  citation: 'bench',
  source: 'fake',
  key: `bench/${seq}`,
  fault: 'none',
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
  const firstMs = [];
  const drainMs = [];
  let downMsTotal = 0;
  let attemptsWhileDown = 0;
  for (let k = 0; k < outages; k++) {
    const before = received;
    await cp.close();
    const len = Math.round(outageMs * (0.5 + 0.5 * Math.random()));
    downMsTotal += len;
    const rpcFailed0 = failedRpcs;
    const end = Date.now() + len;
    while (Date.now() < end) {
      await push();
      await new Promise((r) => setTimeout(r, 50));
    }
    attemptsWhileDown += failedRpcs - rpcFailed0;
    const want = appended.size;
    cp = await startCp(port);
    const back = process.hrtime.bigint();
    let first = null;
    while (received < want && Number(process.hrtime.bigint() - back) / 1e6 < 120_000) {
      if (first === null && received > before) first = Number(process.hrtime.bigint() - back) / 1e6;
      await new Promise((r) => setTimeout(r, 2));
    }
    const done = Number(process.hrtime.bigint() - back) / 1e6;
    firstMs.push(first ?? done);
    drainMs.push(done);
    // Acks of the last batches are written just after the answers arrive.
    while (store.pendingCount() > 0 && Number(process.hrtime.bigint() - back) / 1e6 < 120_000) await new Promise((r) => setTimeout(r, 20));
  }
  const f = (xs) => `${pct(xs, 50).toFixed(0)}/${pct(xs, 99).toFixed(0)}/${Math.max(...xs).toFixed(0)}`;
  result = {
    bench: 'controlplane-outage',
    outages,
    outageMs: `${Math.round(outageMs / 2)}..${outageMs}`,
    appended: appended.size,
    delivered: received,
    lost: appended.size - received,
    // ms from the control plane listening again: p50/p99/max over the outages.
    backToFirstMs: f(firstMs),
    backToAllMs: f(drainMs),
    // Failed RPCs (all methods) per minute of outage: the load one agent puts on a down control plane.
    failedRpcsPerMinDown: +((attemptsWhileDown / downMsTotal) * 60_000).toFixed(1),
    pendingAfter: store.pendingCount(),
  };
} else if (a.mode === 'isolated') {
  for (let seq = 1; seq <= N; seq++) {
    const got = new Promise((r) => waiters.set(seq, r));
    const ts = process.hrtime.bigint();
    t0.set(seq, ts);
    T0.set(seq, ts);
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
    const ts = process.hrtime.bigint();
    t0.set(seq, ts);
    T0.set(seq, ts);
    await store.append(input(seq));
  }
  await Promise.all(all);
  while (store.pendingCount() > 0) await new Promise((r) => setTimeout(r, 5));
}
const cpu = process.cpuUsage(cpu0);
const stage = (from, to) => {
  const xs = [];
  for (const [q, t] of from) {
    const u = to.get(q);
    if (u !== undefined) xs.push(Number(u - t) / 1e6);
  }
  return xs.length ? `${pct(xs, 50).toFixed(3)}/${pct(xs, 99).toFixed(3)}` : 'n/a';
};
if (!result) {
  const { calls, connections } = await cp.calls();
  result = {
    bench: 'controlplane-latency',
    mode: a.mode,
    http: a.http,
    fsync: a.fsync !== 'false',
    events: N,
    p50Ms: +pct(lat, 50).toFixed(3),
    p99Ms: +pct(lat, 99).toFixed(3),
    maxMs: +Math.max(...lat).toFixed(3),
    cp: a.cp,
    reports: calls.ReportHealth ?? 0,
    // TCP connections the control plane accepted (keep-alive: 1).
    connections,
    // p50/p99 (ms) of each stage.
    appendToDurable: stage(T0, T.durable),
    durableToSend: stage(T.durable, T.send),
    sendToRecv: stage(T.send, T.recv),
    recvToAck: stage(T.recv, T.ack),
    // CPU time of this process per event (agent side + store; + control plane with --cp inline):
    // less sensitive to a loaded machine than the wall-clock percentiles.
    cpuUsPerEvent: Math.round(((cpu.user + cpu.system) / N) * 10) / 10,
    wallMsPerEvent: +(Number(process.hrtime.bigint() - wall0) / 1e6 / N).toFixed(3),
    // Heap of this process after a full GC (node --expose-gc): what the agent side retains.
    ...(typeof globalThis.gc === 'function' ? (globalThis.gc(), { heapMB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1) }) : {}),
    loadavg1: +os.loadavg()[0].toFixed(2),
  };
}
await link.stop({ deadlineMs: 5000 });
await cp.close();
if (child) {
  child.removeAllListeners('exit');
  child.send({ op: 'exit' });
}
await store.close();
rmSync(dir, { recursive: true, force: true });
if (a.json) console.log(JSON.stringify(result));
else
  console.log(
    Object.entries(result)
      .map(([k, v]) => `${k}=${v}`)
      .join(' '),
  );
