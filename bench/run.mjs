#!/usr/bin/env node
// Runs every benchmark in sequence (needs `npm run build`): `npm run bench`.
// Each benchmark prints its own figures; BENCHMARKS.md records them with the machine and date.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');
const runs = [
  ['floor.mjs', quick ? ['--samples', '300'] : []],
  ['nvml-bench.mjs', quick ? ['--only', 'latency', '--events', '2000'] : []],
  ['telemetry-judge.mjs', quick ? ['--samples', '2000'] : []],
  ['store-bench.mjs', quick ? ['--events', '1000', '--storm', '20000'] : []],
  ['kmsg-classify.mjs', []],
  ['kmsg-ingest.mjs', quick ? ['--count', '20000'] : []],
  ['controlplane-latency.mjs', quick ? ['--events', '200'] : []],
  ['controlplane-xid.mjs', quick ? ['--events', '200'] : []],
  ['controlplane-latency.mjs', quick ? ['--outage-ms', '4000', '--outages', '2'] : ['--outage-ms', '9000', '--outages', '8']],
  ['verdict-latency.mjs', quick ? ['--n', '3'] : []],
  ['agent-idle.mjs', quick ? ['--seconds', '10'] : []],
  ['agent-start.mjs', quick ? ['--runs', '3'] : []],
];
let failed = 0;
for (const [file, args] of runs) {
  console.log(`\n=== ${file} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [join(here, file), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.log(`=== ${file} exited with ${r.status ?? r.signal}`);
  }
}
process.exit(failed ? 1 : 0);
