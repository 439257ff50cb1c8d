#!/usr/bin/env node
// Inventory and static fields of every GPU read through the project's addon (dist/nvml facade),
// printed as the normalised JSON that scripts/gpu-check/compare.mjs compares with pynvml_dump.py.
//   node scripts/gpu-check/addon_dump.mjs [--out FILE]   (default: stdout)
// The library is NAVARCH_NVML_LIBRARY when set, else libnvidia-ml.so.1 from the loader path.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

async function main() {
  const args = process.argv.slice(2);
  if (!(args.length === 0 || (args.length === 2 && args[0] === '--out'))) throw new Error('usage: addon_dump.mjs [--out FILE]');
  const facadePath = join(ROOT, 'dist', 'nvml', 'index.js');
  if (!existsSync(facadePath)) throw new Error(`${facadePath} is missing: run \`npm run build:ts\` first (or carry dist/)`);
  const { openNvml } = await import(pathToFileURL(facadePath).href);
  const lib = process.env.NAVARCH_NVML_LIBRARY;
  const nvml = await openNvml(lib ? { libraryPath: lib } : {});
  try {
    const system = await nvml.system();
    const devices = await nvml.devices();
    const snaps = await nvml.snapshot();
    const byIndex = new Map(snaps.map((s) => [s.index, s]));
    const out = {
      source: 'addon',
      system: {
        driverVersion: system.driverVersion,
        nvmlVersion: system.nvmlVersion,
        cudaDriverVersion: system.cudaDriverVersion,
      },
      devices: devices.map((d) => {
        const s = byIndex.get(d.index);
        const t = s && s.ok ? s.telemetry : null;
        return {
          index: d.index,
          uuid: d.uuid,
          name: d.name,
          serial: d.serial,
          pciBusId: d.pciBusId ? d.pciBusId.toUpperCase() : null,
          minorNumber: d.minorNumber,
          memoryTotalBytes: d.memoryTotalBytes,
          powerLimitW: t ? t.powerLimitW : null,
          pcieLinkGenMax: t ? t.pcieLinkGenMax : null,
          pcieLinkWidthMax: t ? t.pcieLinkWidthMax : null,
          eccModeCurrent: t ? t.eccModeCurrent : null,
          eccModePending: t ? t.eccModePending : null,
          persistenceMode: t ? t.persistenceMode : null,
          ...(d.error ? { error: d.error } : {}),
          ...(s && !s.ok ? { snapshotError: s.error } : {}),
        };
      }),
    };
    const text = `${JSON.stringify(out, null, 2)}\n`;
    if (args[0] === '--out') writeFileSync(args[1], text);
    else process.stdout.write(text);
  } finally {
    await nvml.close?.();
  }
}

main().catch((e) => {
  console.error(`addon_dump: ${e?.message ?? e}`);
  process.exit(1);
});
