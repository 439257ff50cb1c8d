#!/usr/bin/env node
/** Entry point of the `navarch-agent` binary: tsc emits dist/cli/main.js, scripts/bundle.mjs bundles it into dist/cli/navarch-agent.mjs (the package's bin). */
import { runCli } from './cli.js';

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`navarch-agent: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
