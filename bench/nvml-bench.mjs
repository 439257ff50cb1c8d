#!/usr/bin/env node
// Benchmarks of the NVML addon (src/nvml facade, built into dist/ by `npm run build:ts`).
//
//   node bench/nvml-bench.mjs                    # fake library: latency, snapshot, storm
//   node bench/nvml-bench.mjs --only latency --events 10000
//   node bench/nvml-bench.mjs --real             # real NVML: snapshot via addon vs nvidia-smi
//   node bench/nvml-bench.mjs --json out.json    # also write the results as JSON
//
// Numbers are printed, never asserted: goals live in BENCHMARKS.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Control, FAKE_NVML_LIB, REPO_ROOT, setupFake, summary } from './nvml-fake-control.mjs';

function parseArgs(argv) {
  const o = { only: null, events: 10_000, samples: 2_000, smiSamples: 30, storm: 1_000_000, real: false, json: null, devices: 8 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = () => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer`);
      return n;
    };
    if (a === '--only') o.only = new Set(val().split(','));
    else if (a === '--events') o.events = num();
    else if (a === '--samples') o.samples = num();
    else if (a === '--smi-samples') o.smiSamples = num();
    else if (a === '--storm') o.storm = num();
    else if (a === '--devices') o.devices = num();
    else if (a === '--real') o.real = true;
    else if (a === '--json') o.json = val();
    else if (a === '-h' || a === '--help') {
      console.log(
        'usage: node bench/nvml-bench.mjs [--real] [--only latency,snapshot,storm] [--events N] [--samples N] [--smi-samples N] [--storm N] [--devices N] [--json FILE]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.only) for (const k of o.only) if (!['latency', 'snapshot', 'storm'].includes(k)) throw new Error(`--only: unknown benchmark ${k}`);
  return o;
}

const us = (ns) => Number(ns) / 1000;
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

async function loadFacade() {
  const path = join(REPO_ROOT, 'dist', 'nvml', 'index.js');
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`npm run build:ts\` (and build the addon) first`);
  return import(pathToFileURL(path).href);
}

function machine() {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const l = execFileSync('lscpu', { encoding: 'utf8' });
    model = /Model name:\s*(.+)/.exec(l)?.[1]?.trim() ?? model;
  } catch {
    /* lscpu missing */
  }
  return { cpu: model, cores: cpus().length, node: process.version, date: new Date().toISOString(), loadavg1m: loadavg()[0] };
}

function eventsOf(x) {
  return Array.isArray(x) ? x : [x];
}

/** Latency from the fake's enqueue (CLOCK_MONOTONIC, in the xid reply) to the JS callback. */
async function benchLatency(facade, opts, ctl) {
  const nvml = await facade.openNvml({ libraryPath: FAKE_NVML_LIB });
  let pending = null;
  const watcher = nvml.watch(
    (x) => {
      const now = process.hrtime.bigint();
      for (const ev of eventsOf(x)) if (pending && ev.type === 'xid') pending(ev, now);
    },
    { waitTimeoutMs: 500, ref: true },
  );
  const enqToCb = [],
    enqToWait = [],
    sendToCb = [];
  let timeouts = 0;
  try {
    // the watcher registers asynchronously: wait until an event makes it through
    for (let tries = 0; ; tries++) {
      const got = new Promise((r) => {
        pending = () => r(true);
      });
      await ctl.request({ op: 'xid', device: 0, xid: 1 });
      if (await Promise.race([got, new Promise((r) => setTimeout(() => r(false), 200))])) break;
      if (tries > 100) throw new Error('no event reached JS within 20 s');
    }
    const warm = Math.min(500, Math.floor(opts.events / 10));
    for (let i = 0; i < warm + opts.events; i++) {
      const code = 2 + (i % 250);
      let resolveEv;
      const got = new Promise((r) => {
        resolveEv = r;
      });
      pending = (ev, at) => {
        if (Number(ev.data) === code) resolveEv({ ev, at });
      };
      const sent = process.hrtime.bigint();
      const reply = await ctl.request({ op: 'xid', device: 0, xid: code });
      let timer;
      const r = await Promise.race([
        got,
        new Promise((res) => {
          timer = setTimeout(() => res(null), 5000);
        }),
      ]);
      clearTimeout(timer);
      if (!r) {
        timeouts++;
        continue;
      }
      if (i < warm) continue;
      const enq = BigInt(reply.enqueuedNs);
      enqToCb.push(us(r.at - enq));
      enqToWait.push(us(BigInt(r.ev.monotonicNs) - enq));
      sendToCb.push(us(r.at - sent));
    }
  } finally {
    pending = null;
    await watcher.stop();
    await nvml.close?.();
  }
  return {
    events: enqToCb.length,
    lostOrLate: timeouts,
    enqueueToCallbackUs: summary(enqToCb),
    enqueueToWaitReturnUs: summary(enqToWait),
    socketSendToCallbackUs: summary(sendToCb),
  };
}

const SMI_FIELDS = [
  'index',
  'uuid',
  'name',
  'temperature.gpu',
  'power.draw',
  'enforced.power.limit',
  'utilization.gpu',
  'utilization.memory',
  'memory.used',
  'memory.total',
  'clocks.sm',
  'clocks.mem',
  'pstate',
  'fan.speed',
  'persistence_mode',
  'ecc.mode.current',
  'ecc.mode.pending',
  'ecc.errors.corrected.volatile.total',
  'ecc.errors.uncorrected.volatile.total',
  'ecc.errors.corrected.aggregate.total',
  'ecc.errors.uncorrected.aggregate.total',
  'retired_pages.pending',
  'pcie.link.gen.current',
  'pcie.link.gen.max',
  'pcie.link.width.current',
  'pcie.link.width.max',
  'clocks_throttle_reasons.active',
];
const SMI_MIN_FIELDS = ['index', 'uuid', 'name', 'temperature.gpu', 'power.draw', 'utilization.gpu', 'memory.used', 'memory.total', 'clocks.sm', 'pstate'];

function smiOnce(fields) {
  return spawnSync('nvidia-smi', [`--query-gpu=${fields.join(',')}`, '--format=csv,noheader'], { encoding: 'utf8', timeout: 60_000 });
}

async function benchSnapshot(facade, opts, libraryPath) {
  const nvml = await facade.openNvml(libraryPath ? { libraryPath } : {});
  const times = [];
  let devices = 0,
    errors = 0;
  try {
    const warm = Math.min(200, Math.floor(opts.samples / 10));
    for (let i = 0; i < warm + opts.samples; i++) {
      const t0 = process.hrtime.bigint();
      const snap = await nvml.snapshot();
      const dt = process.hrtime.bigint() - t0;
      if (i === 0) devices = snap.length;
      errors += snap.filter((s) => !s.ok).length;
      if (i >= warm) times.push(us(dt));
    }
  } finally {
    await nvml.close?.();
  }
  const res = { devices, perDeviceErrors: errors, snapshotUs: summary(times) };
  if (opts.real) {
    let fields = SMI_FIELDS;
    let first = smiOnce(fields);
    if (first.status !== 0) {
      fields = SMI_MIN_FIELDS;
      first = smiOnce(fields);
    }
    if (first.status !== 0) {
      res.nvidiaSmi = { error: `nvidia-smi failed: ${(first.stderr || first.stdout || String(first.error)).trim().split('\n')[0]}` };
    } else {
      const st = [];
      for (let i = 0; i < opts.smiSamples; i++) {
        const t0 = process.hrtime.bigint();
        const r = smiOnce(fields);
        const dt = process.hrtime.bigint() - t0;
        if (r.status !== 0) throw new Error(`nvidia-smi failed on sample ${i}: ${r.stderr}`);
        st.push(us(dt));
      }
      const s = summary(st);
      res.nvidiaSmi = { fields: fields.length, spawnPerSampleUs: s, speedupMean: s.mean / res.snapshotUs.mean, speedupP50: s.p50 / res.snapshotUs.p50 };
    }
  }
  return res;
}

async function benchStorm(facade, opts, ctl, variant) {
  const nvml = await facade.openNvml({ libraryPath: FAKE_NVML_LIB });
  let delivered = 0,
    callbacks = 0,
    firstAt = 0n,
    lastAt = 0n;
  const rssBefore = process.memoryUsage().rss;
  let rssPeakSampled = rssBefore;
  const sampler = setInterval(() => {
    rssPeakSampled = Math.max(rssPeakSampled, process.memoryUsage().rss);
  }, 20);
  const watcher = nvml.watch(
    (x) => {
      const now = process.hrtime.bigint();
      if (!firstAt) firstAt = now;
      lastAt = now;
      callbacks++;
      for (const ev of eventsOf(x)) delivered += ev.count ?? 1;
    },
    { waitTimeoutMs: 200, ref: true },
  );
  let reply;
  try {
    // make sure the watcher is registered before the storm
    for (let tries = 0; delivered === 0; tries++) {
      await ctl.request({ op: 'xid', device: 0, xid: 1 });
      await new Promise((r) => setTimeout(r, 50));
      if (tries > 400) throw new Error('watcher never delivered an event');
    }
    // let the warm-up event(s) settle, then take the baselines
    await new Promise((r) => setTimeout(r, 300));
    delivered = 0;
    callbacks = 0;
    firstAt = 0n;
    const w0 = watcher.stats();
    const before = await ctl.request({ op: 'stats' });
    const start = process.hrtime.bigint();
    reply = await ctl.request({
      op: 'storm',
      device: 0,
      xid: 13,
      count: opts.storm,
      distinct: variant.distinct,
      ...(variant.perSecond ? { perSecond: variant.perSecond } : {}),
    });
    // wait until the fake's queue is empty and nothing new arrives for 500 ms
    let last = -1,
      stableSince = Date.now();
    for (;;) {
      const s = await ctl.request({ op: 'stats' });
      const w = watcher.stats();
      const seen = delivered + (w.dropped ?? 0);
      if (s.queued === 0 && seen === last) {
        if (Date.now() - stableSince > 500) break;
      } else {
        last = seen;
        stableSince = Date.now();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const after = await ctl.request({ op: 'stats' });
    const w = watcher.stats();
    const spanS = Number((lastAt || start) - start) / 1e9;
    return {
      variant: variant.name,
      injected: opts.storm,
      injectSeconds: Number(reply.elapsedNs) / 1e9,
      fakeRecorded: reply.recorded,
      fakeDroppedQueueFull: after.dropped - before.dropped,
      addonDelivered: w.delivered - w0.delivered,
      addonMerged: w.merged - w0.merged,
      addonDropped: w.dropped - w0.dropped,
      jsEventsCounted: delivered,
      callbacks,
      secondsToLastEvent: spanS,
      deliveredPerSecond: spanS > 0 ? delivered / spanS : NaN,
      rssBeforeMiB: rssBefore / 2 ** 20,
      rssPeakSampledMiB: rssPeakSampled / 2 ** 20,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    clearInterval(sampler);
    await watcher.stop();
    await nvml.close?.();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const want = (k) => !opts.only || opts.only.has(k);
  const facade = await loadFacade();
  const out = { machine: machine(), mode: opts.real ? 'real NVML' : 'fake libnvidia-ml', results: {} };
  console.log(
    `# ${out.mode} — ${out.machine.cpu}, ${out.machine.cores} cores, node ${out.machine.node}, ${out.machine.date}, load ${out.machine.loadavg1m.toFixed(2)}`,
  );

  if (opts.real) {
    if (want('snapshot')) {
      const r = await benchSnapshot(facade, opts, process.env.NAVARCH_NVML_LIBRARY);
      out.results.snapshot = r;
      console.log(
        `snapshot (${r.devices} devices, ${r.snapshotUs.n} samples): mean ${fmt(r.snapshotUs.mean)} µs, p50 ${fmt(r.snapshotUs.p50)} µs, p99 ${fmt(r.snapshotUs.p99)} µs, per-device errors ${r.perDeviceErrors}`,
      );
      if (r.nvidiaSmi?.error) console.log(`nvidia-smi: ${r.nvidiaSmi.error}`);
      else if (r.nvidiaSmi)
        console.log(
          `nvidia-smi --query-gpu (${r.nvidiaSmi.fields} fields, spawned per sample, ${r.nvidiaSmi.spawnPerSampleUs.n} samples): mean ${fmt(r.nvidiaSmi.spawnPerSampleUs.mean / 1000, 2)} ms, p50 ${fmt(r.nvidiaSmi.spawnPerSampleUs.p50 / 1000, 2)} ms — addon is ${fmt(r.nvidiaSmi.speedupMean, 0)}x faster (mean), ${fmt(r.nvidiaSmi.speedupP50, 0)}x (p50)`,
        );
    }
  } else {
    if (!existsSync(FAKE_NVML_LIB)) throw new Error(`${FAKE_NVML_LIB} is missing: run \`npm run build:fake\``);
    const fake = setupFake({ devices: opts.devices });
    // The control socket exists while NVML is initialised: hold one session open for the whole run.
    const holder = await facade.openNvml({ libraryPath: FAKE_NVML_LIB });
    const ctl = await Control.connect(fake.socketPath);
    try {
      if (want('latency')) {
        const r = await benchLatency(facade, opts, ctl);
        out.results.latency = r;
        const l = r.enqueueToCallbackUs;
        console.log(
          `latency, injected XID -> JS callback (${r.events} events, one at a time): p50 ${fmt(l.p50)} µs, p99 ${fmt(l.p99)} µs, max ${fmt(l.max)} µs (missed ${r.lostOrLate})`,
        );
        console.log(
          `  of which enqueue -> nvmlEventSetWait_v2 return: p50 ${fmt(r.enqueueToWaitReturnUs.p50)} µs, p99 ${fmt(r.enqueueToWaitReturnUs.p99)} µs; socket send -> callback p50 ${fmt(r.socketSendToCallbackUs.p50)} µs, p99 ${fmt(r.socketSendToCallbackUs.p99)} µs`,
        );
      }
      if (want('snapshot')) {
        const r = await benchSnapshot(facade, opts, FAKE_NVML_LIB);
        out.results.snapshot = r;
        console.log(
          `snapshot (${r.devices} devices, ${r.snapshotUs.n} samples): mean ${fmt(r.snapshotUs.mean)} µs, p50 ${fmt(r.snapshotUs.p50)} µs, p99 ${fmt(r.snapshotUs.p99)} µs, per-device errors ${r.perDeviceErrors}`,
        );
      }
      if (want('storm')) {
        out.results.storm = [];
        for (const variant of [
          { name: 'identical XIDs, full speed', distinct: 1 },
          { name: '1000 distinct XIDs, full speed', distinct: 1000 },
          { name: '1000 distinct XIDs, paced 200k/s', distinct: 1000, perSecond: 200_000 },
        ]) {
          const r = await benchStorm(facade, opts, ctl, variant);
          out.results.storm.push(r);
          console.log(
            `storm [${r.variant}] ${r.injected} injected in ${fmt(r.injectSeconds, 3)} s: fake queue-full drops ${r.fakeDroppedQueueFull}; addon delivered ${r.addonDelivered}, merged ${r.addonMerged}, dropped ${r.addonDropped}; JS counted ${r.jsEventsCounted} in ${r.callbacks} callbacks, ${fmt(r.deliveredPerSecond, 0)} events/s; RSS ${fmt(r.rssBeforeMiB)} -> peak ${fmt(r.rssPeakSampledMiB)} MiB (maxrss ${fmt(r.maxRssMiB)} MiB)`,
          );
        }
      }
    } finally {
      ctl.close();
      await holder.close?.();
      fake.cleanup();
    }
  }
  if (opts.json) writeFileSync(opts.json, `${JSON.stringify(out, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

main().catch((e) => {
  console.error(`nvml-bench: ${e?.message ?? e}`);
  process.exit(1);
});
