#!/usr/bin/env node
// Fabric facts of this host, for a real-GPU run: NVSwitches (sysfs class 0x0680 and /dev nodes,
// src/host/nvswitch.ts), the nvidia-fabricmanager service state (systemctl is-active, 5 s bound)
// and every GPU's nvmlDeviceGetGpuFabricInfoV answer (v3, or v2 on drivers before 580; null where
// unsupported) read through the project's addon; plus what the agent's fabric checks conclude
// from them (src/sources/fabric.ts with the real uptime, src/sources/fabric-manager.ts).
//   node scripts/gpu-check/fabric_dump.mjs [--out FILE]   (default: stdout)
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const dist = async (rel) => {
  const p = join(ROOT, 'dist', rel);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build:ts\` first (or carry dist/)`);
  return import(pathToFileURL(p).href);
};

async function main() {
  const args = process.argv.slice(2);
  if (!(args.length === 0 || (args.length === 2 && args[0] === '--out'))) throw new Error('usage: fabric_dump.mjs [--out FILE]');
  const { openNvml } = await dist('nvml/index.js');
  const { detectNvSwitches } = await dist('host/nvswitch.js');
  const { bootTimeMs } = await dist('host/boot-time.js');
  const { judgeFabric, DEFAULT_FABRIC_BOOT_GRACE_MS } = await dist('sources/fabric.js');
  const { systemctlIsActive, judgeFabricManager } = await dist('sources/fabric-manager.js');
  const lib = process.env.NAVARCH_NVML_LIBRARY;
  const nvml = await openNvml(lib ? { libraryPath: lib } : {});
  try {
    const snaps = await nvml.snapshot();
    const sinceBootMs = Date.now() - bootTimeMs();
    const uptimeS = Math.round(sinceBootMs / 1000);
    const nvswitch = await detectNvSwitches('/');
    const service = nvswitch.present ? await systemctlIsActive('nvidia-fabricmanager') : null;
    const bad = (findings) => findings.filter((f) => f.bad).map((f) => ({ name: f.name, severity: f.severity, action: f.action, message: f.message }));
    const out = {
      uptimeSeconds: uptimeS,
      nvswitch,
      nvswitchDevices: nvswitch.deviceNodes,
      fabricManager: service ?? 'no check (no NVSwitch)',
      fabricManagerVerdict: service
        ? judgeFabricManager(null, { nowMs: Date.now(), sinceBootMs, service, errors: [] }).events.map((e) => ({
            key: e.key,
            severity: e.severity,
            message: e.message,
          }))
        : [],
      gpus: snaps.map((s) => {
        const fabric = s.ok ? (s.telemetry.fabric ?? null) : null;
        return {
          index: s.index,
          uuid: s.uuid,
          fabric,
          verdict: s.ok ? bad(judgeFabric(s.index, fabric, sinceBootMs, DEFAULT_FABRIC_BOOT_GRACE_MS)) : [],
          ...(s.ok ? {} : { error: s.error }),
        };
      }),
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
