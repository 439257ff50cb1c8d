#!/usr/bin/env node
// npm "install" hook: use the prebuilt addon from prebuilds/linux-<arch>/ (node-gyp-build picks
// it; one Node-API build serves every Node >= 20 on glibc), or build it from source with
// node-gyp. A host without a compiler still installs: the agent then runs with the fake backend
// only, and says so. NAVARCH_REQUIRE_ADDON=1 (CI, release builds) makes a failed build fatal.
// A source build is forced by NAVARCH_FORCE_ADDON_BUILD=1 or `npm install --build-from-source`.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v !== 'false';

/** Loads the addon the way the agent will; returns null on success or the one-line reason. */
function tryLoad() {
  try {
    const load = require('node-gyp-build');
    const file = load.resolve(root);
    const mod = require(file);
    if (typeof mod.sdNotify !== 'function') return `${relative(root, file)} lacks the expected exports`;
    return null;
  } catch (err) {
    return String(err && err.message ? err.message : err).split('\n')[0];
  }
}

if (process.platform !== 'linux') {
  console.warn(`navarch-agent: the NVML addon is Linux-only; ${process.platform} gets the fake GPU backend`);
  process.exit(0);
}
const forced = truthy(process.env.NAVARCH_FORCE_ADDON_BUILD) || truthy(process.env.npm_config_build_from_source);
if (!forced) {
  const why = tryLoad();
  if (why === null) process.exit(0);
  console.warn(`navarch-agent: no usable prebuilt addon (${why}); building from source`);
}

// npm puts its bundled node-gyp on npm_config_node_gyp; fall back to the dev dependency / PATH.
const gyp = process.env.npm_config_node_gyp;
const cmd = gyp ? process.execPath : 'node-gyp';
const args = gyp ? [gyp, 'rebuild'] : ['rebuild'];
const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: !gyp });
if (r.status === 0) {
  const why = tryLoad();
  if (why === null) process.exit(0);
  console.warn(`navarch-agent: the freshly built addon does not load: ${why}`);
}
const msg = 'navarch-agent: building the NVML addon failed; only the fake GPU backend will work';
if (process.env.NAVARCH_REQUIRE_ADDON === '1') {
  console.error(`${msg} (NAVARCH_REQUIRE_ADDON=1)`);
  process.exit(1);
}
console.warn(msg);
process.exit(0);
