#!/usr/bin/env node
// What reading dcgm-exporter's default fields costs a snapshot: the addon over the fake
// libnvidia-ml with the five entry points they use (energy, encoder, decoder, PCIe throughput,
// field values) present, against a baseline session where the fake hides them (missingSymbols),
// in interleaved rounds of the same run. Printed, never asserted.
//
//   node bench/dcgm-fields-cost.mjs [--devices 8] [--samples 300] [--rounds 4]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FAKE_NVML_LIB, REPO_ROOT, summary } from './nvml-fake-control.mjs';

const NEW_ENTRY_POINTS = [
  'nvmlDeviceGetTotalEnergyConsumption',
  'nvmlDeviceGetEncoderUtilization',
  'nvmlDeviceGetDecoderUtilization',
  'nvmlDeviceGetPcieThroughput',
  'nvmlDeviceGetFieldValues',
];

function parseArgs(argv) {
  const o = { devices: 8, samples: 300, rounds: 4 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]?.replace(/^--/, '');
    const n = Number(argv[i + 1]);
    if (!(k in o) || !Number.isInteger(n) || n < 1) {
      console.error(`usage: node bench/dcgm-fields-cost.mjs [--devices N] [--samples N] [--rounds N] (bad: ${argv[i]} ${argv[i + 1] ?? ''})`);
      process.exit(2);
    }
    o[k] = n;
  }
  return o;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { openNvml } = await import(pathToFileURL(join(REPO_ROOT, 'dist', 'nvml', 'index.js')).href);
  const dir = mkdtempSync(join(tmpdir(), 'navarch-bench-dcgm-'));
  const devices = Array.from({ length: o.devices }, () => ({}));
  const configs = {
    baseline: join(dir, 'without.json'),
    withFields: join(dir, 'with.json'),
  };
  writeFileSync(configs.baseline, JSON.stringify({ devices, missingSymbols: NEW_ENTRY_POINTS }));
  writeFileSync(configs.withFields, JSON.stringify({ devices }));
  process.env.NAVARCH_NVML_LIBRARY = FAKE_NVML_LIB;
  const times = { baseline: [], withFields: [] };
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (const kind of r % 2 === 0 ? ['baseline', 'withFields'] : ['withFields', 'baseline']) {
        process.env.NAVARCH_FAKE_NVML_CONFIG = configs[kind];
        const nvml = await openNvml({ libraryPath: FAKE_NVML_LIB });
        try {
          const first = await nvml.snapshot();
          const energy = first[0]?.ok ? first[0].telemetry.totalEnergyMj : undefined;
          if ((kind === 'baseline') !== (energy === null)) throw new Error(`${kind}: totalEnergyMj is ${energy}: the config did not apply`);
          for (let i = 0; i < o.samples; i++) {
            const t0 = process.hrtime.bigint();
            await nvml.snapshot();
            times[kind].push(Number(process.hrtime.bigint() - t0) / 1000);
          }
        } finally {
          await nvml.close();
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const b = summary(times.baseline);
  const w = summary(times.withFields);
  console.log(
    `# ${o.devices} devices, ${o.rounds} interleaved rounds x ${o.samples} snapshots each, node ${process.version}, load ${loadavg()[0].toFixed(2)}, ${new Date().toISOString()}`,
  );
  console.log(`baseline (5 entry points hidden): mean ${b.mean.toFixed(1)} µs, p50 ${b.p50.toFixed(1)} µs, p99 ${b.p99.toFixed(1)} µs`);
  console.log(`with the dcgm fields:             mean ${w.mean.toFixed(1)} µs, p50 ${w.p50.toFixed(1)} µs, p99 ${w.p99.toFixed(1)} µs`);
  console.log(`ratio with/baseline: mean ${(w.mean / b.mean).toFixed(2)}, p50 ${(w.p50 / b.p50).toFixed(2)}`);
}

main().catch((e) => {
  console.error(`dcgm-fields-cost: ${e.message}`);
  process.exit(1);
});
