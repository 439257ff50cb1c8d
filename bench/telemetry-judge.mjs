#!/usr/bin/env node
/**
 * Telemetry path benchmark (needs `npm run build` first; runs the compiled dist/, or DIST=<dir>).
 *
 *   node bench/telemetry-judge.mjs [--gpus 8] [--samples 20000] [--json]
 *
 * Measures, per sample of N GPUs: FakeBackend.snapshot() and judgeSnapshot() on a healthy node
 * (the steady state: no events) and on a node where every GPU is faulty (raise/clear churn),
 * plus the NVML-event classifier on batches of XIDs.
 */
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

const { values } = parseArgs({
  options: { gpus: { type: 'string', default: '8' }, samples: { type: 'string', default: '20000' }, json: { type: 'boolean', default: false } },
});
const gpus = Number(values.gpus);
const samples = Number(values.samples);
if (!Number.isInteger(gpus) || gpus < 1 || gpus > 64) throw new Error(`--gpus: expected 1..64, got ${values.gpus}`);
if (!Number.isInteger(samples) || samples < 100) throw new Error(`--samples: expected >= 100, got ${values.samples}`);

const dist = process.env.DIST ? pathToFileURL(`${process.env.DIST.replace(/\/$/, '')}/`) : new URL('../dist/', import.meta.url);
let fake, tel, ev, fab;
try {
  [fake, tel, ev, fab] = await Promise.all([
    import(new URL('backends/fake.js', dist).href),
    import(new URL('sources/telemetry.js', dist).href),
    import(new URL('sources/nvml-events.js', dist).href),
    import(new URL('sources/fabric.js', dist).href).catch(() => null),
  ]);
} catch (e) {
  console.error(`bench: cannot load ${dist.pathname} (run npm run build first): ${e.message.split('\n')[0]}`);
  process.exit(2);
}

function stats(ns) {
  ns.sort((a, b) => a - b);
  const q = (p) => ns[Math.min(ns.length - 1, Math.floor(p * ns.length))] / 1000;
  return { p50_us: +q(0.5).toFixed(2), p99_us: +q(0.99).toFixed(2), max_us: +q(1).toFixed(2) };
}

async function measure(fn) {
  for (let i = 0; i < Math.min(1000, samples / 10); i++) await fn(i); // warm-up
  const ns = new Array(samples);
  for (let i = 0; i < samples; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    ns[i] = Number(process.hrtime.bigint() - t);
  }
  return stats(ns);
}

const backend = new fake.FakeBackend({ count: gpus, seed: 1 });
await backend.open();
const results = {};
results.fake_snapshot = await measure(() => backend.snapshot());

const snap = await backend.snapshot();
let state = tel.emptyJudgeState();
let t0 = 1e12;
results.judge_healthy = await measure(() => {
  const r = tel.judgeSnapshot(
    state,
    snap.map((s) => ({ ...s, takenAtMs: (t0 += 10_000) })),
  );
  state = r.state;
});

// Fabric info on every GPU (a healthy v3 answer, as on an HGX H100/H200), and the fabric rule alone.
if (fab) {
  const fabricInfo = { version: 3, state: 3, status: 0, cliqueId: 1, clusterUuid: '0'.repeat(32), healthMask: 0, healthSummary: 1 };
  const withFabric = snap.map((s) => (s.ok ? { ...s, telemetry: { ...s.telemetry, fabric: fabricInfo } } : s));
  state = tel.emptyJudgeState();
  results.judge_healthy_fabric = await measure(() => {
    const r = tel.judgeSnapshot(
      state,
      withFabric.map((s) => ({ ...s, takenAtMs: (t0 += 10_000) })),
    );
    state = r.state;
  });
  results.fabric_rule_only = await measure(() => {
    for (let g = 0; g < gpus; g++) fab.judgeFabric(g, fabricInfo, 3_600_000, 300_000);
  });
}

// Every GPU alternates between hot+throttled+link down and healthy: raise/clear on every sample.
for (let g = 0; g < gpus; g++) {
  backend.inject({ kind: 'temperature', gpu: g, celsius: 97 });
  backend.inject({ kind: 'clock_reasons', gpu: g, mask: 0x48 });
  backend.inject({ kind: 'nvlink_down', gpu: g, link: 3 });
}
const bad = await backend.snapshot();
const good = snap;
state = tel.emptyJudgeState();
let events = 0;
results.judge_churn = await measure((i) => {
  const r = tel.judgeSnapshot(
    state,
    (i % 4 === 0 ? bad : good).map((s) => ({ ...s, takenAtMs: (t0 += 10_000) })),
    tel.telemetryConfig({ clearAfterGoodSamples: 1 }),
  );
  state = r.state;
  events += r.events.length;
});

const batch = Array.from({ length: 64 }, (_, i) => ({
  type: 'xid',
  eventTypeMask: 8,
  data: [13, 31, 48, 79][i % 4],
  deviceIndex: i % gpus,
  uuid: `GPU-${i}`,
  pciBusId: '00000000:18:00.0',
  gpuInstanceId: null,
  computeInstanceId: null,
  monotonicNs: 0n,
  wallTimeMs: Date.now(),
  count: 1,
}));
results.classify_64_xids = await measure(() => ev.nvmlEventsToInputs(batch));

const out = { gpus, samples, node: process.version, results, churn_events: events };
if (values.json) console.log(JSON.stringify(out));
else {
  console.log(`telemetry bench: ${gpus} GPUs, ${samples} samples, node ${process.version}`);
  for (const [k, v] of Object.entries(results)) console.log(`  ${k.padEnd(20)} p50 ${v.p50_us} us  p99 ${v.p99_us} us  max ${v.max_us} us`);
  if (results.fabric_rule_only) {
    const r = (a, b) => (a / b).toFixed(2);
    console.log(
      `  ratios (p50): judge_healthy_fabric / judge_healthy ${r(results.judge_healthy_fabric.p50_us, results.judge_healthy.p50_us)}, fabric_rule_only / judge_healthy ${r(results.fabric_rule_only.p50_us, results.judge_healthy.p50_us)}`,
    );
  }
}
await backend.close();
