#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/cli/main.js, from tsc) and its JavaScript dependencies into one
 * ES module, dist/cli/navarch-agent.mjs, the package's `bin`. One file parses and links in a
 * fraction of the time Node spends resolving and loading ~400 separate modules, which is most of
 * the agent's start (see BENCHMARKS.md, "Start"). It sits in dist/cli/, at the same depth as the
 * modules it replaces, so the package-root lookups through import.meta.url (`../..`: the native
 * addon, prebuilds, package.json) resolve as before. node-gyp-build and *.node stay external and
 * are loaded from node_modules at run time.
 */
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

const root = fileURLToPath(new URL('..', import.meta.url));
const entry = `${root}dist/cli/main.js`;
if (!existsSync(entry)) {
  console.error(`bundle: ${entry} is missing; run "npm run build:ts" first`);
  process.exit(2);
}
await build({
  entryPoints: [entry],
  outfile: `${root}dist/cli/navarch-agent.mjs`,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['node-gyp-build', '*.node'],
  // CommonJS dependencies call require() for Node's built-ins; give the ES module one.
  banner: { js: "import { createRequire as __navarchCreateRequire } from 'node:module';\nconst require = __navarchCreateRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});
