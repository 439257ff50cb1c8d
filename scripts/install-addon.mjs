#!/usr/bin/env node
// npm "install" hook: load a prebuilt addon from prebuilds/ (node-gyp-build), or build it from
// source with node-gyp. A host without a compiler still installs: the agent then runs with the
// fake backend only, and says so. NAVARCH_REQUIRE_ADDON=1 (CI, release builds) makes a failed
// build fatal.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function tryLoad() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

if (process.platform !== 'linux') {
  console.warn(`navarch-agent: the NVML addon is Linux-only; ${process.platform} gets the fake GPU backend`);
  process.exit(0);
}
if (!process.env.NAVARCH_FORCE_ADDON_BUILD && tryLoad()) process.exit(0);

// npm puts its bundled node-gyp on npm_config_node_gyp; fall back to the dev dependency / PATH.
const gyp = process.env.npm_config_node_gyp;
const cmd = gyp ? process.execPath : 'node-gyp';
const args = gyp ? [gyp, 'rebuild'] : ['rebuild'];
const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: !gyp });
if (r.status === 0) process.exit(0);
const msg = 'navarch-agent: building the NVML addon failed; only the fake GPU backend will work';
if (process.env.NAVARCH_REQUIRE_ADDON === '1') {
  console.error(`${msg} (NAVARCH_REQUIRE_ADDON=1)`);
  process.exit(1);
}
console.warn(msg);
process.exit(0);
