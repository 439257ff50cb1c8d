#!/usr/bin/env node
/**
 * Time from a fault's injection to the control plane's verdict, per fault class (needs
 * `npm run build`; runs the compiled dist/):
 *
 *   node bench/verdict-latency.mjs [--n 30] [--modes agent,policy] [--classes 'name;name'] [--json]
 *
 * The agent runs as its own process (`dist/cli/main.js run --gpu-backend fake`, 4 GPUs,
 * telemetry every 250 ms). Each trial injects one fault through the agent's local API
 * (`POST /inject`, src/api/inject.ts) and measures from just before that request to the first
 * ReportHealth the development control plane (in this process, judging with real CEL over
 * Navarch's default policy) computes as UNHEALTHY or DEGRADED: `onReport`'s receivedAtNs
 * (process.hrtime.bigint()). Then the fault is undone (`recover`, or `POST /faults/clear` for an
 * XID fault) and the next trial waits until the agent has no active fault and a report reads
 * HEALTHY again. GPUs rotate 0..3. Per class and verdict mode (--verdict agent | policy): p50, p99,
 * max and the verdicts reached. A class whose verdict the default policy cannot express in policy
 * mode (it reads HEALTHY) is reported as such after its first trial times out (3 s).
 *
 * In the same run, one sample of the machine's floor (bench/floor.mjs: a 256-byte append +
 * fdatasync and a keep-alive loopback POST) is taken between trials; the classes' p50/p99 are
 * also given as ratios of the floor's.
 *
 * Left out: clock slowdowns (rate-based over a 10-minute window: a verdict needs 6 samples with
 * the reason set, by design, so the time is the window rule's, not the path's).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openFloorProbe, ratios } from './floor.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(MAIN)) {
  console.error(`verdict-latency: ${MAIN} is missing; run "npm run build" first`);
  process.exit(2);
}
const { startDevControlPlane } = await import(new URL('../dist/devcp/dev-server.js', import.meta.url).href);

/** name -> the fault to inject on GPU g, and how to undo it. */
const CLASSES = {
  'XID 48 (critical, in the fatal list)': { inject: (g) => ({ kind: 'xid', gpu: g, xid: 48 }), clearKey: (g) => `gpu${g}/xid/48` },
  'XID 109 (critical, not in the list)': { inject: (g) => ({ kind: 'xid', gpu: g, xid: 109 }), clearKey: (g) => `gpu${g}/xid/109` },
  'XID 13 (warning, one-off)': { inject: (g) => ({ kind: 'xid', gpu: g, xid: 13 }), oneOff: true },
  'GPU lost (XID 79)': { inject: (g) => ({ kind: 'gpu_lost', gpu: g }) },
  'thermal critical (97 C)': { inject: (g) => ({ kind: 'temperature', gpu: g, celsius: 97 }) },
  'thermal warning (88 C)': { inject: (g) => ({ kind: 'temperature', gpu: g, celsius: 88 }) },
  'ECC uncorrectable': { inject: (g) => ({ kind: 'ecc', gpu: g, dbe: 1 }) },
  'ECC corrected rising (1000)': { inject: (g) => ({ kind: 'ecc', gpu: g, sbe: 1000 }) },
  'row remapping failure': { inject: (g) => ({ kind: 'remapped_rows', gpu: g, failure: true }) },
  'row remapping pending': { inject: (g) => ({ kind: 'remapped_rows', gpu: g, pending: true }) },
  'NVLink down': { inject: (g) => ({ kind: 'nvlink_down', gpu: g, link: 0 }) },
  'PCIe replays rising': { inject: (g) => ({ kind: 'pcie_replay', gpu: g, count: 1000 }) },
  'power above the limit': { inject: (g) => ({ kind: 'power', gpu: g, watts: 2000 }) },
};

const { values: a } = parseArgs({
  options: {
    n: { type: 'string', default: '30' },
    modes: { type: 'string', default: 'agent,policy' },
    classes: { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(a.n);
if (!Number.isInteger(N) || N < 1 || N > 10_000) {
  console.error(`verdict-latency: --n must be 1..10000, got ${a.n}`);
  process.exit(2);
}
const modes = a.modes.split(',').filter(Boolean);
for (const m of modes) {
  if (!['agent', 'policy'].includes(m)) {
    console.error(`verdict-latency: --modes: expected agent and/or policy, got "${m}"`);
    process.exit(2);
  }
}
const names = a.classes ? a.classes.split(';').map((s) => s.trim()) : Object.keys(CLASSES);
for (const c of names) {
  if (!CLASSES[c]) {
    console.error(`verdict-latency: --classes: unknown class "${c}" (one of: ${Object.keys(CLASSES).join('; ')})`);
    process.exit(2);
  }
}

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const dir = mkdtempSync(join(os.tmpdir(), 'verdict-bench-'));
const probe = await openFloorProbe({ dir });
for (let i = 0; i < 50; i++) await probe.sample();
probe.reset();

async function runMode(mode) {
  const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 1 });
  const node = `bench-verdict-${mode}`;
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const agent = spawn(
    process.execPath,
    [
      MAIN,
      'run',
      '--gpu-backend',
      'fake',
      '--server',
      cp.url,
      '--node-id',
      node,
      '--kmsg-path',
      'none',
      '--telemetry-interval',
      '250ms',
      '--state-dir',
      join(dir, `state-${mode}`),
      '--listen',
      `127.0.0.1:${port}`,
      '--log-level',
      'warn',
      '--verdict',
      mode,
    ],
    { env: { PATH: process.env.PATH, NAVARCH_GPU_COUNT: '4', NAVARCH_LOG_FORMAT: 'json' }, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const close = async () => {
    agent.kill('SIGKILL');
    await cp.close();
  };
  let waiter = null; // { t0, resolve }
  let lastHealth = null;
  let lastAtNs = 0n;
  cp.onReport((r) => {
    if (r.nodeId !== node) return;
    lastHealth = r.health;
    lastAtNs = r.receivedAtNs;
    if (waiter && r.health !== 'healthy' && r.receivedAtNs > waiter.t0) {
      const w = waiter;
      waiter = null;
      w.resolve({ ms: Number(r.receivedAtNs - w.t0) / 1e6, verdict: r.health });
    }
  });
  const post = async (path, body) => {
    const res = await fetch(`${api}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 200) throw new Error(`${path} ${JSON.stringify(body)}: HTTP ${res.status} ${await res.text()}`);
  };
  const until = async (what, cond, ms = 30_000) => {
    const end = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`verdict-latency (${mode}): timed out waiting for ${what}`);
      await sleep(50);
    }
  };
  const activeFaults = async () => (await (await fetch(`${api}/status`)).json()).activeFaults.length;
  const out = {};
  try {
    await until('registration and a healthy report', () => lastHealth === 'healthy', 60_000);
    for (const name of names) {
      const c = CLASSES[name];
      const lat = [];
      const verdicts = {};
      let unexpressed = false;
      for (let i = 0; i < N; i++) {
        const g = i % 4;
        // A healthy start: no active fault, and a report after that reads HEALTHY.
        await until('no active fault', async () => (await activeFaults()) === 0);
        const since = process.hrtime.bigint();
        await until('a healthy report', () => lastHealth === 'healthy' && lastAtNs > since);
        await probe.sample();
        const t0 = process.hrtime.bigint();
        const got = new Promise((resolve) => {
          waiter = { t0, resolve };
        });
        await post('/inject', c.inject(g));
        const r = await Promise.race([got, sleep(i === 0 ? 3000 : 10_000).then(() => null)]);
        waiter = null;
        if (r === null) {
          if (i === 0) unexpressed = true;
          else lat.push(Number.NaN);
        } else {
          lat.push(r.ms);
          verdicts[r.verdict] = (verdicts[r.verdict] ?? 0) + 1;
        }
        if (c.clearKey) await post('/faults/clear', { key: c.clearKey(g), reason: 'bench' });
        else if (!c.oneOff) await post('/inject', { kind: 'recover', gpu: g });
        if (unexpressed) break;
      }
      const ok = lat.filter((x) => Number.isFinite(x));
      out[name] = unexpressed
        ? { trials: 0, note: 'no UNHEALTHY or DEGRADED verdict in 3 s (the default policy judges it HEALTHY)' }
        : {
            trials: ok.length,
            missing: lat.length - ok.length,
            p50Ms: +pct(ok, 50).toFixed(2),
            p99Ms: +pct(ok, 99).toFixed(2),
            maxMs: +Math.max(...ok).toFixed(2),
            verdicts,
          };
      if (!a.json) {
        const o = out[name];
        console.error(
          `${mode.padEnd(6)} ${name.padEnd(38)} ${o.trials ? `n=${o.trials} p50=${o.p50Ms} p99=${o.p99Ms} max=${o.maxMs} ms ${JSON.stringify(o.verdicts)}` : o.note}`,
        );
      }
    }
  } finally {
    await close();
  }
  return out;
}

const result = {
  bench: 'verdict-latency',
  n: N,
  cpus: os.cpus().length,
  cpu: os.cpus()[0]?.model ?? '?',
  node: process.version,
  date: new Date().toISOString(),
  modes: {},
};
const load0 = os.loadavg()[0];
try {
  for (const m of modes) result.modes[m] = await runMode(m);
  const f = probe.result();
  result.floor = f;
  for (const m of modes) for (const o of Object.values(result.modes[m])) if (o.trials) o.vsFloor = ratios(o, f);
  result.loadavg1 = { start: +load0.toFixed(2), end: +os.loadavg()[0].toFixed(2) };
} finally {
  probe.close();
  rmSync(dir, { recursive: true, force: true });
}
if (a.json) console.log(JSON.stringify(result));
else {
  console.log(`verdict-latency ${result.date} ${result.cpu} x${result.cpus} ${result.node} load ${result.loadavg1.start} -> ${result.loadavg1.end}`);
  console.log(
    `floor: fdatasync p50=${result.floor.disk.p50Ms} p99=${result.floor.disk.p99Ms} ms, POST p50=${result.floor.http.p50Ms} p99=${result.floor.http.p99Ms} ms, floor p50=${result.floor.floor.p50Ms} p99=${result.floor.floor.p99Ms} ms`,
  );
  console.log('| Fault class | mode | n | p50 ms | p99 ms | max ms | p50 / p99 vs floor | verdicts |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const name of names) {
    for (const m of modes) {
      const o = result.modes[m][name];
      if (!o.trials) console.log(`| ${name} | ${m} | 0 | - | - | - | - | ${o.note} |`);
      else
        console.log(
          `| ${name} | ${m} | ${o.trials}${o.missing ? ` (+${o.missing} missing)` : ''} | ${o.p50Ms} | ${o.p99Ms} | ${o.maxMs} | ${o.vsFloor.p50}x / ${o.vsFloor.p99}x | ${Object.entries(
            o.verdicts,
          )
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')} |`,
        );
    }
  }
}
