#!/usr/bin/env node
// Fabric facts of this host, for a real-GPU run: NVSwitch device nodes, the nvidia-fabricmanager
// service state (systemctl is-active, 5 s bound) and every GPU's nvmlDeviceGetGpuFabricInfoV answer
// (v3, or v2 on drivers before 580; null where unsupported) read through the project's addon.
//   node scripts/gpu-check/fabric_dump.mjs [--out FILE]   (default: stdout)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function nvswitchNodes() {
  try {
    return readdirSync('/dev').filter((n) => /^nvidia-nvswitch\d+$/.test(n)).sort();
  } catch {
    return [];
  }
}

function fabricManagerState() {
  const r = spawnSync('systemctl', ['is-active', 'nvidia-fabricmanager'], { encoding: 'utf8', timeout: 5000 });
  if (r.error) return `unknown (${r.error.message})`;
  return (r.stdout || '').trim().slice(0, 64) || `unknown (exit ${r.status})`;
}

async function main() {
  const args = process.argv.slice(2);
  if (!(args.length === 0 || (args.length === 2 && args[0] === '--out'))) throw new Error('usage: fabric_dump.mjs [--out FILE]');
  const facadePath = join(ROOT, 'dist', 'nvml', 'index.js');
  if (!existsSync(facadePath)) throw new Error(`${facadePath} is missing: run \`npm run build:ts\` first (or carry dist/)`);
  const { openNvml } = await import(pathToFileURL(facadePath).href);
  const lib = process.env.NAVARCH_NVML_LIBRARY;
  const nvml = await openNvml(lib ? { libraryPath: lib } : {});
  try {
    const snaps = await nvml.snapshot();
    const out = {
      nvswitchDevices: nvswitchNodes(),
      fabricManager: fabricManagerState(),
      gpus: snaps.map((s) => ({ index: s.index, uuid: s.uuid, fabric: s.ok ? (s.telemetry.fabric ?? null) : null, ...(s.ok ? {} : { error: s.error }) })),
    };
    const text = `${JSON.stringify(out, null, 2)}\n`;
    if (args[0] === '--out') writeFileSync(args[1], text);
    process.stdout.write(text);
  } finally {
    await nvml.close?.();
  }
}

main().catch((e) => {
  process.stderr.write(`fabric_dump: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
