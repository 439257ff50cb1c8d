#!/usr/bin/env node
/**
 * Sustained kernel-log ingest into the durable store (needs `npm run build`): a file of N XID
 * records (one XID 79 in the middle, the rest XID 13) read by KmsgSource with the real event store
 * (fsync'd journal) behind it, timed from start until the cursor reaches the last record. The
 * baseline, in the same run, is a plain reader: the same file read and split into lines.
 * Checks the result: the XID counts in the store add up to N and the XID 79 is there.
 *
 *   node bench/kmsg-ingest.mjs [--count 100000]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { count: { type: 'string', default: '100000' } } });
const count = Number(values.count);
const dist = new URL('../dist/', import.meta.url);
const { KmsgSource } = await import(new URL('sources/kmsg.js', dist).href);
const { formatKmsgRecord } = await import(new URL('sources/kmsg-parse.js', dist).href);
const { openEventStore } = await import(new URL('store/event-store.js', dist).href);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kmsg-ingest-'));
const file = path.join(dir, 'kmsg');
const mid = Math.floor(count / 2);
const out = [];
for (let i = 1; i <= count; i++) {
  const msg =
    i === mid
      ? 'NVRM: Xid (PCI:0000:9b:00): 79, pid=1, name=a, GPU has fallen off the bus.'
      : 'NVRM: Xid (PCI:0000:9b:00): 13, pid=1, name=a, Graphics SM Warp Exception';
  out.push(formatKmsgRecord({ level: 4, seq: i, usecSinceBoot: i * 10, message: msg }));
}
fs.writeFileSync(file, out.join(''));

// baseline: plain reader
let t0 = process.hrtime.bigint();
let lines = 0;
await new Promise((resolve, reject) => {
  let rest = '';
  fs.createReadStream(file, { encoding: 'utf8', highWaterMark: 16 * 1024 })
    .on('data', (chunk) => {
      const parts = (rest + chunk).split('\n');
      rest = parts.pop() ?? '';
      lines += parts.length;
    })
    .on('end', resolve)
    .on('error', reject);
});
const baseS = Number(process.hrtime.bigint() - t0) / 1e9;

const store = await openEventStore({ dir: path.join(dir, 'store'), bootId: 'bench' });
let appends = 0;
const src = new KmsgSource({
  path: file,
  stateDir: path.join(dir, 'state'),
  bootId: 'bench',
  bootTimeMs: Date.now(),
  resolveGpu: (pci) => (pci === '0000:9b:00' ? { index: 0, uuid: 'GPU-0' } : null),
  onEvent: async (e) => {
    appends++;
    await store.append(e);
  },
});
t0 = process.hrtime.bigint();
await src.start();
while (src.stats().lastSeq !== String(count)) await new Promise((r) => setTimeout(r, 5));
const ingestS = Number(process.hrtime.bigint() - t0) / 1e9;
await src.stop();
const xids = store.pending().filter((e) => e.type === 'xid');
const sum = xids.reduce((n, e) => n + e.count, 0);
const has79 = xids.some((e) => e.key === 'gpu0/xid/79');
const st = src.stats();
await store.close();
fs.rmSync(dir, { recursive: true, force: true });

const rate = count / ingestS;
const baseRate = lines / baseS;
console.log(`kmsg ingest, ${count} XID records from a file into the durable store (${os.cpus().length} cpus, node ${process.version})`);
console.log(`  plain reader baseline: ${lines} lines in ${(baseS * 1000).toFixed(1)} ms = ${Math.round(baseRate)} lines/s`);
console.log(
  `  KmsgSource + store:    ${count} records in ${(ingestS * 1000).toFixed(1)} ms = ${Math.round(rate)} lines/s (ratio to baseline ${(rate / baseRate).toFixed(3)})`,
);
console.log(`  store appends: ${appends}, cursor writes: ${st.cursorWrites}, sum of XID counts: ${sum} (exact: ${sum === count}), XID 79 present: ${has79}`);
if (sum !== count || !has79) process.exit(1);
