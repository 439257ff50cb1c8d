#!/usr/bin/env node
/**
 * Idle cost of the agent: CPU share and RSS of `navarch-agent run` with 8 GPUs, measured over a
 * window (default 60 s) from /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS), next
 * to a bare `node -e 'setInterval(()=>{},1000)'` idling in the same run.
 *
 * Variants: the fake backend, and the native addon over the fake libnvidia-ml when both are built.
 * Each agent talks to an in-process dev control plane (default intervals: telemetry 10 s,
 * heartbeat 30 s, health 60 s, command poll 10 s) and has the kernel log disabled.
 *
 *   node bench/agent-idle.mjs [--seconds 60] [--json]
 * Needs `npm run build` (dist/), plus build:addon and build:fake for the NVML variant.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// The package's bin (the bundle) when built, else tsc's module tree.
const mainJs = existsSync(join(root, 'dist/cli/navarch-agent.mjs')) ? join(root, 'dist/cli/navarch-agent.mjs') : join(root, 'dist/cli/main.js');
const argv = process.argv.slice(2);
const secIdx = argv.indexOf('--seconds');
const seconds = secIdx >= 0 ? Number(argv[secIdx + 1]) : Number(process.env.BENCH_SECONDS ?? 60);
const json = argv.includes('--json');
if (!Number.isFinite(seconds) || seconds <= 0) {
  console.error('agent-idle: --seconds must be a positive number');
  process.exit(2);
}
if (!existsSync(mainJs)) {
  console.error(`agent-idle: ${mainJs} not found: run npm run build first`);
  process.exit(2);
}

const CLK_TCK = 100; // Linux USER_HZ
const PAGE_WARMUP_MS = 5000;

function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after ")": state(3) ... utime is field 14, stime 15 (1-based in proc(5)) -> rest[11], rest[12]
  return Number(rest[11]) + Number(rest[12]);
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function waitHealthy(url, proc, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode}`);
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url}/healthz did not answer within ${timeoutMs} ms`);
}

const children = [];
const temps = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const t of temps) rmSync(t, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

const { startDevControlPlane } = await import(join(root, 'dist/devcp/dev-server.js'));
const cp = await startDevControlPlane();

async function startAgentVariant(name, backendArgs, extraEnv) {
  const port = await freePort();
  const state = mkdtempSync(join(tmpdir(), 'navarch-bench-idle-'));
  temps.push(state);
  const proc = spawn(
    process.execPath,
    [
      mainJs,
      'run',
      '--listen',
      `127.0.0.1:${port}`,
      '--state-dir',
      state,
      '--server',
      cp.url,
      '--node-id',
      `bench-${name}`,
      '--kmsg-path',
      'none',
      '--log-level',
      'warn',
      ...backendArgs,
    ],
    { env: { PATH: process.env.PATH, NAVARCH_LOG_FORMAT: 'json', ...extraEnv }, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  children.push(proc);
  await waitHealthy(`http://127.0.0.1:${port}`, proc);
  return { name, proc };
}

const variants = [];
const bare = spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
children.push(bare);
variants.push({ name: 'bare node (setInterval)', proc: bare });
variants.push(await startAgentVariant('fake', ['--gpu-backend', 'fake'], { NAVARCH_GPU_COUNT: '8' }));

const fakeLib = join(root, 'build/fake-nvml/libnvidia-ml.so.1');
const addon = join(root, 'build/Release/navarch_nvml.node');
let nvmlNote = null;
if (existsSync(fakeLib) && existsSync(addon) && existsSync(join(root, 'dist/nvml/index.js'))) {
  const dir = mkdtempSync(join(tmpdir(), 'navarch-bench-fakenvml-'));
  temps.push(dir);
  const cfg = join(dir, 'fake-nvml.json');
  writeFileSync(cfg, JSON.stringify({ controlSocket: join(dir, 'control.sock') }));
  variants.push(await startAgentVariant('nvml', ['--gpu-backend', 'nvml'], { NAVARCH_NVML_LIBRARY: fakeLib, NAVARCH_FAKE_NVML_CONFIG: cfg }));
} else {
  nvmlNote = `NVML variant skipped: needs ${addon} (npm run build:addon) and ${fakeLib} (npm run build:fake)`;
  console.error(nvmlNote);
}

await new Promise((r) => setTimeout(r, PAGE_WARMUP_MS));
const start = variants.map((v) => ({ ticks: cpuTicks(v.proc.pid), t: process.hrtime.bigint() }));
const rssSamples = variants.map(() => []);
const sampler = setInterval(() => variants.forEach((v, i) => rssSamples[i].push(rssKiB(v.proc.pid))), 1000);
await new Promise((r) => setTimeout(r, seconds * 1000));
clearInterval(sampler);
const results = variants.map((v, i) => {
  const ticks = cpuTicks(v.proc.pid) - start[i].ticks;
  const wallS = Number(process.hrtime.bigint() - start[i].t) / 1e9;
  const rss = rssSamples[i].filter(Number.isFinite);
  return {
    variant: v.name,
    cpuPercent: Number(((ticks / CLK_TCK / wallS) * 100).toFixed(3)),
    cpuSeconds: ticks / CLK_TCK,
    rssMiBEnd: Number((rss.at(-1) / 1024).toFixed(1)),
    rssMiBMax: Number((Math.max(...rss) / 1024).toFixed(1)),
    windowS: Number(wallS.toFixed(1)),
  };
});
const out = { benchmark: 'agent-idle', seconds, node: process.version, gpus: 8, results, ...(nvmlNote ? { note: nvmlNote } : {}) };
if (json) console.log(JSON.stringify(out, null, 2));
else {
  console.log(`agent idle over ${seconds}s (8 GPUs, dev control plane, default intervals), ${process.version}`);
  console.log(`${'variant'.padEnd(26)}${'CPU %'.padStart(8)}${'CPU s'.padStart(8)}${'RSS MiB'.padStart(10)}${'max'.padStart(8)}`);
  for (const r of results) {
    console.log(
      `${r.variant.padEnd(26)}${r.cpuPercent.toFixed(2).padStart(8)}${r.cpuSeconds.toFixed(2).padStart(8)}${r.rssMiBEnd.toFixed(1).padStart(10)}${r.rssMiBMax.toFixed(1).padStart(8)}`,
    );
  }
}
for (const v of variants) v.proc.kill('SIGTERM');
await Promise.all(variants.map((v) => new Promise((r) => (v.proc.exitCode !== null ? r() : v.proc.on('exit', r)))));
await cp.close();
cleanup();
