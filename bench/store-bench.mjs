#!/usr/bin/env node
/**
 * Event store and kernel-log parser benchmark (needs `npm run build` first; runs the compiled
 * dist/, or DIST=<dir>).
 *
 *   node bench/store-bench.mjs [--dir /var/tmp] [--events 5000] [--storm 200000] [--json]
 *
 * Measures on the file system of --dir (default: the OS temp dir):
 *   - sequential appends with fsync (one at a time: one write + fdatasync each): rate, p50/p99
 *   - concurrent appends with fsync (64 in flight, distinct keys): group commit rate, commits
 *   - the same without fsync
 *   - a storm of identical events (batches of 1000 in flight) coalescing into one event
 *   - reopen (replay + compaction) of a store holding --events pending events
 *   - parsing of /dev/kmsg XID records and NVRM lines
 */
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: os.tmpdir() },
    events: { type: 'string', default: '5000' },
    storm: { type: 'string', default: '200000' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(values.events);
const STORM = Number(values.storm);
if (!Number.isInteger(N) || N < 100) throw new Error(`--events: expected an integer >= 100, got ${values.events}`);
if (!Number.isInteger(STORM) || STORM < 1000) throw new Error(`--storm: expected an integer >= 1000, got ${values.storm}`);

const dist = process.env.DIST ? pathToFileURL(`${process.env.DIST.replace(/\/$/, '')}/`) : new URL('../dist/', import.meta.url);
let store, parse;
try {
  [store, parse] = await Promise.all([import(new URL('store/event-store.js', dist).href), import(new URL('sources/kmsg-parse.js', dist).href)]);
} catch (e) {
  console.error(`bench: cannot load ${dist.pathname} (run npm run build first): ${e.message.split('\n')[0]}`);
  process.exit(2);
}

const base = fs.mkdtempSync(path.join(values.dir, 'store-bench-'));
let n = 0;
const ev = (i, key = `gpu${i % 8}/k${i}`, severity = 'warning') => ({
  type: 'xid',
  system: 'DRIVER',
  gpuIndex: i % 8,
  gpuUuid: `GPU-${i % 8}`,
  metrics: { xid_code: '13', i: String(i) },
  message: 'XID 13 (Graphics Engine Exception): Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0)',
  timeMs: Date.now(),
  severity,
  action: 'restart_app',
  citation: 'bench',
  source: 'nvml',
  key,
  fault: 'none',
});
const pct = (arr, p) => arr[Math.min(arr.length - 1, Math.floor(p * arr.length))];
const results = {};

async function fresh(opts = {}) {
  return store.openEventStore({ dir: path.join(base, `s${n++}`), maxEvents: 1_000_000, bootId: 'bench', ...opts });
}

try {
  // 1. sequential with fsync
  {
    const s = await fresh();
    const lat = [];
    const count = Math.min(N, 2000);
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const a = performance.now();
      await s.append(ev(i));
      lat.push(performance.now() - a);
    }
    const dt = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    results.sequentialFsync = { appends: count, perSec: Math.round(count / dt), p50_ms: +pct(lat, 0.5).toFixed(3), p99_ms: +pct(lat, 0.99).toFixed(3) };
    await s.close();
  }
  // 2. concurrent with fsync (group commit) and 3. without fsync
  for (const [name, fsync] of [
    ['concurrentFsync', true],
    ['concurrentNoFsync', false],
  ]) {
    const s = await fresh({ fsync });
    const t0 = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < N) await s.append(ev(next++));
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    const dt = (performance.now() - t0) / 1000;
    const st = s.stats();
    results[name] = { appends: N, perSec: Math.round(N / dt), commits: st.commits, compactions: st.compactions, bytesOnDisk: st.bytesOnDisk };
    await s.close();
  }
  // 4. storm of identical events
  {
    const s = await fresh();
    const t0 = performance.now();
    for (let i = 0; i < STORM; i += 1000) {
      const ps = [];
      for (let j = i; j < Math.min(STORM, i + 1000); j++) ps.push(s.append(ev(j, 'gpu0/xid/13')));
      await Promise.all(ps);
    }
    const dt = (performance.now() - t0) / 1000;
    const p = s.pending();
    if (p.length !== 1 || p[0].count !== STORM) throw new Error(`storm: expected 1 event with count ${STORM}, got ${p.length} / ${p[0]?.count}`);
    results.stormFsync = {
      appends: STORM,
      perSec: Math.round(STORM / dt),
      commits: s.stats().commits,
      heapMiB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1),
    };
    await s.close();
  }
  // 5. reopen with N pending events
  {
    const dir = path.join(base, 'reopen');
    const s = await store.openEventStore({ dir, fsync: false, maxEvents: 1_000_000, bootId: 'bench' });
    const ps = [];
    for (let i = 0; i < N; i++) ps.push(s.append(ev(i)));
    await Promise.all(ps);
    await s.close();
    const t0 = performance.now();
    const s2 = await store.openEventStore({ dir, maxEvents: 1_000_000, bootId: 'bench' });
    results.reopen = { pending: s2.pendingCount(), ms: +(performance.now() - t0).toFixed(1), bytesOnDisk: s2.stats().bytesOnDisk };
    await s2.close();
  }
  // 6. parsing
  {
    const rec =
      '4,1227,437812449932,-;NVRM: Xid (PCI:0000:00:16): 119, pid=36055, name=dcgm-exporter, Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 10 (FREE) (0x5c000001 0x0).\n';
    const buf = Buffer.from(rec);
    const count = 200_000;
    const t0 = performance.now();
    let ok = 0;
    for (let i = 0; i < count; i++) {
      const r = parse.parseKmsgRecord(buf);
      if (r && parse.parseNvrmLine(r.message)) ok++;
    }
    const dt = (performance.now() - t0) / 1000;
    if (ok !== count) throw new Error('parse: not every record parsed');
    const big = `6,7,8,-;${'A'.repeat(1024 * 1024)}`;
    const b0 = performance.now();
    parse.parseKmsgRecord(big);
    results.parse = { recordsPerSec: Math.round(count / dt), oneMegabyteLine_ms: +(performance.now() - b0).toFixed(2) };
  }
} finally {
  fs.rmSync(base, { recursive: true, force: true });
}

if (values.json) console.log(JSON.stringify({ dir: values.dir, ...results }));
else {
  console.log(`event store benchmark (dir ${values.dir}, node ${process.version})`);
  for (const [k, v] of Object.entries(results)) console.log(`  ${k.padEnd(20)} ${JSON.stringify(v)}`);
}
