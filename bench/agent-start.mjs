#!/usr/bin/env node
/**
 * Start time: from spawning `navarch-agent run` to the control plane receiving its first
 * RegisterNode, next to a bare `node -e` that sends one HTTP POST (the floor: Node's own start
 * plus one loopback request), in the same run, interleaved. Two agent variants: the shipped bin
 * (dist/cli/navarch-agent.mjs, one bundled module, scripts/bundle.mjs) and tsc's module tree
 * (dist/cli/main.js), which the tests run.
 *
 *   node bench/agent-start.mjs [--runs 15] [--backend fake|nvml] [--json]
 *
 * The agent talks to the development control plane in this process; its kernel log is off and
 * its state directory fresh each run. `--backend nvml` uses the native addon over the project's
 * fake libnvidia-ml (8 GPUs). Needs `npm run build` (and build:addon + build:fake for nvml).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const mainJs = join(root, 'dist/cli/main.js');
const bundleJs = join(root, 'dist/cli/navarch-agent.mjs');
const { values: a } = parseArgs({
  options: { runs: { type: 'string', default: '15' }, backend: { type: 'string', default: 'fake' }, json: { type: 'boolean', default: false } },
});
const runs = Number(a.runs);
if (!Number.isInteger(runs) || runs < 1 || runs > 500) {
  console.error(`agent-start: --runs must be 1..500, got ${a.runs}`);
  process.exit(2);
}
if (!['fake', 'nvml'].includes(a.backend)) {
  console.error(`agent-start: --backend must be fake or nvml, got ${a.backend}`);
  process.exit(2);
}
if (!existsSync(mainJs)) {
  console.error(`agent-start: ${mainJs} not found: run npm run build first`);
  process.exit(2);
}
const fakeLib = join(root, 'build/fake-nvml/libnvidia-ml.so.1');
if (a.backend === 'nvml' && !existsSync(fakeLib)) {
  console.error(`agent-start: ${fakeLib} not found: run npm run build:fake (and build:addon)`);
  process.exit(2);
}

const { startDevControlPlane } = await import(new URL('../dist/devcp/dev-server.js', import.meta.url).href);
const cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });

// The floor's server: answers any request, resolves the waiter of the run.
let floorWaiter = null;
const floorServer = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    floorWaiter?.(process.hrtime.bigint());
    res.end('ok');
  });
});
await new Promise((r) => floorServer.listen(0, '127.0.0.1', r));
const floorUrl = `http://127.0.0.1:${floorServer.address().port}/`;

const ms = (t0, t1) => Number(t1 - t0) / 1e6;
const temps = [];

async function bareRun() {
  const got = new Promise((r) => (floorWaiter = r));
  const t0 = process.hrtime.bigint();
  const p = spawn(process.execPath, ['-e', `fetch(${JSON.stringify(floorUrl)}, { method: 'POST', body: 'x' }).then((r) => r.text())`], { stdio: 'ignore' });
  const t1 = await Promise.race([got, new Promise((r) => setTimeout(() => r(null), 30_000))]);
  await new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)));
  return t1 === null ? null : ms(t0, t1);
}

async function agentRun(i, entry) {
  const state = mkdtempSync(join(tmpdir(), 'navarch-bench-start-'));
  temps.push(state);
  const nodeId = `start-${i}-${entry.length}`;
  const env = { PATH: process.env.PATH, NAVARCH_LOG_FORMAT: 'json', NAVARCH_GPU_COUNT: '8' };
  if (a.backend === 'nvml') {
    const cfg = join(state, 'fake-nvml.json');
    writeFileSync(cfg, '{}\n');
    Object.assign(env, { NAVARCH_NVML_LIBRARY: fakeLib, NAVARCH_FAKE_NVML_CONFIG: cfg });
  }
  const t0 = process.hrtime.bigint();
  const p = spawn(
    process.execPath,
    [
      entry,
      'run',
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      join(state, 's'),
      '--server',
      cp.url,
      '--node-id',
      nodeId,
      '--kmsg-path',
      'none',
      '--log-level',
      'warn',
      '--gpu-backend',
      a.backend,
    ],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  p.stderr.on('data', (d) => (err = (err + d).slice(-2000)));
  let t1 = null;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && p.exitCode === null) {
    if (cp.node(nodeId)) {
      t1 = process.hrtime.bigint();
      break;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  p.kill('SIGTERM');
  await new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)));
  if (t1 === null) console.error(`agent-start: run ${i} did not register (exit ${p.exitCode}): ${err.trim().split('\n').at(-1) ?? ''}`);
  return t1 === null ? null : ms(t0, t1);
}

const agent = [];
const bundled = [];
const bare = [];
const haveBundle = existsSync(bundleJs);
if (!haveBundle) console.error(`agent-start: ${bundleJs} not found (npm run build makes it); measuring the module tree only`);
for (let i = 0; i < runs; i++) {
  const b = await bareRun();
  if (b !== null) bare.push(b);
  const g = await agentRun(i, mainJs);
  if (g !== null) agent.push(g);
  if (haveBundle) {
    const u = await agentRun(i, bundleJs);
    if (u !== null) bundled.push(u);
  }
}
await cp.close();
floorServer.close();
for (const t of temps) rmSync(t, { recursive: true, force: true });

function stats(xs) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((x, y) => x - y);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: +q(0.5).toFixed(1), p90: +q(0.9).toFixed(1), max: +s.at(-1).toFixed(1) };
}
const out = { benchmark: 'agent-start', backend: a.backend, runs, node: process.version, bundle: stats(bundled), modules: stats(agent), bareNode: stats(bare) };
if (out.bundle && out.bareNode) out.bundleRatioP50 = +(out.bundle.p50 / out.bareNode.p50).toFixed(2);
if (out.modules && out.bareNode) out.modulesRatioP50 = +(out.modules.p50 / out.bareNode.p50).toFixed(2);
if (a.json) console.log(JSON.stringify(out));
else {
  const f = (s) => (s ? `p50 ${s.p50} ms, p90 ${s.p90} ms, max ${s.max} ms (${s.n} runs)` : 'no successful run');
  console.log(`agent-start (${a.backend} backend, 8 GPUs, ${process.version}): spawn -> first RegisterNode received`);
  console.log(`  agent, bundle (the bin): ${f(out.bundle)}   (goal: p50 <= 500 ms)`);
  console.log(`  agent, module tree:     ${f(out.modules)}`);
  console.log(`  bare node:              ${f(out.bareNode)}   (spawn -> one POST received)`);
  console.log(`  p50 / bare p50: bundle ${out.bundleRatioP50 ?? 'n/a'}x, module tree ${out.modulesRatioP50 ?? 'n/a'}x`);
}
if (agent.length < runs || (haveBundle && bundled.length < runs)) process.exitCode = 1;
