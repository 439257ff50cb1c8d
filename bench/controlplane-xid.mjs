#!/usr/bin/env node
/**
 * XID-to-control-plane benchmark over the real paths (needs `npm run build` and the addon:
 * `npm run build:addon`, `npm run build:fake`):
 *
 *   node bench/controlplane-xid.mjs [--events 1000] [--gap-ms 5] [--no-floor] [--json]
 *
 * The agent runs as its own process (`dist/cli/main.js run --gpu-backend nvml`) on the native
 * addon over the project's fake libnvidia-ml. Each XID is injected through the fake's control
 * socket; latency is from just before that write to the moment the development control plane
 * (in this process) has the event: NVML event wait -> addon thread -> classification -> durable
 * store (fsync) -> ReportHealth over loopback HTTP.
 *
 * In the same run it measures the machine's floor (bench/floor.mjs: a 256-byte append plus
 * fdatasync, and a keep-alive loopback POST to another Node process), one floor sample in each
 * gap between two injections, and prints the agent's p50/p99 as ratios of the floor's.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import * as os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatFloor, openFloorProbe, ratios } from './floor.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(root, 'dist', 'cli', 'main.js');
const LIB = join(root, 'build', 'fake-nvml', 'libnvidia-ml.so.1');
const ADDON = join(root, 'build', 'Release', 'navarch_nvml.node');
for (const [p, how] of [
  [MAIN, 'npm run build'],
  [LIB, 'npm run build:fake'],
  [ADDON, 'npm run build:addon'],
]) {
  if (!existsSync(p)) {
    console.error(`controlplane-xid: ${p} is missing; run "${how}" first`);
    process.exit(2);
  }
}
const { startDevControlPlane } = await import(new URL('../dist/devcp/dev-server.js', import.meta.url).href);

const { values: a } = parseArgs({
  options: {
    events: { type: 'string', default: '1000' },
    'gap-ms': { type: 'string', default: '5' },
    'no-floor': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(a.events);
const gap = Number(a['gap-ms']);
if (!Number.isInteger(N) || N < 1 || N > 100_000) throw new Error(`--events must be 1..100000, got ${a.events}`);

const dir = mkdtempSync(join(os.tmpdir(), 'cp-xid-'));
const sock = join(dir, 'c.sock');
const cfg = join(dir, 'fake.json');
writeFileSync(cfg, JSON.stringify({ controlSocket: sock }) + '\n');
const port = await new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});

const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
const agent = spawn(
  process.execPath,
  [
    MAIN,
    'run',
    '--gpu-backend',
    'nvml',
    '--server',
    cp.url,
    '--node-id',
    'bench-xid',
    '--kmsg-path',
    'none',
    '--state-dir',
    join(dir, 'state'),
    '--listen',
    `127.0.0.1:${port}`,
    '--log-level',
    'warn',
  ],
  {
    env: { PATH: process.env.PATH, NAVARCH_NVML_LIBRARY: LIB, NAVARCH_FAKE_NVML_CONFIG: cfg, NAVARCH_LOG_FORMAT: 'json' },
    stdio: ['ignore', 'ignore', 'inherit'],
  },
);
const probe = a['no-floor'] ? null : await openFloorProbe({ dir });
const cleanup = async () => {
  probe?.close();
  agent.kill('SIGKILL');
  await cp.close();
  rmSync(dir, { recursive: true, force: true });
};

const until = async (what, cond, ms = 60_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) {
      await cleanup();
      throw new Error(`controlplane-xid: timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
};
await until('registration', () => cp.node('bench-xid') !== undefined);

const inject = (req) =>
  new Promise((resolve, reject) => {
    const s = createConnection(sock);
    let buf = '';
    s.on('error', reject);
    s.on('connect', () => s.write(JSON.stringify(req) + '\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) {
        s.destroy();
        const r = JSON.parse(buf);
        if (r.ok) resolve(r);
        else reject(new Error(String(r.error)));
      }
    });
  });

const devices = cp.node('bench-xid').gpus.length;
const lat = [];
let waiting = null;
cp.onEvent((ev) => {
  if (waiting && ev.metrics.fault_key === waiting.key && ev.metrics.reasserted !== 'true') {
    lat.push(Number(ev.receivedAtNs - waiting.t0) / 1e6);
    const w = waiting;
    waiting = null;
    w.resolve();
  }
});
for (let i = 0; i < N; i++) {
  const device = i % devices;
  const xid = 1 + (Math.floor(i / devices) % 150);
  const got = new Promise((resolve) => {
    waiting = { key: `gpu${device}/xid/${xid}`, t0: process.hrtime.bigint(), resolve };
  });
  await inject({ op: 'xid', device, xid });
  await Promise.race([got, new Promise((r) => setTimeout(r, 10_000))]);
  if (waiting) {
    waiting = null;
    lat.push(Number.NaN);
  }
  if (probe) {
    if (i === 0) for (let w = 0; w < 50; w++) await probe.sample();
    if (i === 0) probe.reset();
    await probe.sample();
  }
  if (gap > 0) await new Promise((r) => setTimeout(r, gap));
}
const ok = lat.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
const pct = (p) => ok[Math.min(ok.length - 1, Math.floor((p / 100) * ok.length))];
const result = {
  bench: 'controlplane-xid',
  events: N,
  delivered: ok.length,
  missing: N - ok.length,
  p50Ms: +pct(50).toFixed(3),
  p99Ms: +pct(99).toFixed(3),
  maxMs: +ok[ok.length - 1].toFixed(3),
  loadavg1: +os.loadavg()[0].toFixed(2),
};
const floor = probe?.result();
if (floor) {
  result.floor = floor;
  result.ratio = ratios(result, floor);
}
await cleanup();
if (a.json) console.log(JSON.stringify(result));
else {
  const { floor: f, ratio, ...flat } = result;
  console.log(
    Object.entries(flat)
      .map(([k, v]) => `${k}=${v}`)
      .join(' '),
  );
  if (f) {
    console.log(formatFloor(f));
    console.log(`agent/floor: p50 ${ratio.p50}x, p99 ${ratio.p99}x (goal: <= 1.5x each)`);
  }
}
