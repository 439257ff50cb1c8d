/**
 * Hostile input files through the real agent process: /dev/zero, /dev/urandom, a sparse 100 MB
 * file, a FIFO with no writer and a YAML unknown tag as --config, --auth-token-file or --scenario.
 * Each must end with exit 2 and exactly one stderr line (no hang, no bad_alloc, no YAML warning).
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, tempDir } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping hostile-input process tests: ${MAIN_JS} not built (run npm run build)`);
const d = DIST_BUILT ? describe : describe.skip;

const dir = tempDir('hostile-input');
const fifo = join(dir, 'fifo');
const big = join(dir, 'big.yaml');
const tag = join(dir, 'tag.yaml');

function runAgent(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN_JS, 'run', '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'state'), ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NAVARCH_LOG_FORMAT: 'json', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (s: string) => (err += s));
    // A hang (the old FIFO behaviour) is killed and shows up as a null exit code.
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stderr: err });
    });
  });
}

function expectOneLine(r: { code: number | null; stderr: string }, re: RegExp): void {
  expect(r.code).toBe(2);
  expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(re);
}

d('hostile input files (agent process)', () => {
  if (DIST_BUILT) {
    execFileSync('mkfifo', [fifo]);
    const fd = openSync(big, 'w');
    ftruncateSync(fd, 100 * 1024 * 1024);
    closeSync(fd);
    writeFileSync(tag, 'server: !!js/function "function () { return 1 }"\n');
  }

  it('--config /dev/zero, /dev/urandom, a 100 MB file, a FIFO: exit 2, one line', async () => {
    expectOneLine(await runAgent(['--config', '/dev/zero']), /\/dev\/zero: cannot read config file: a character device, not a regular file/);
    expectOneLine(await runAgent(['--config', '/dev/urandom']), /\/dev\/urandom: cannot read config file: a character device/);
    expectOneLine(await runAgent(['--config', big]), /cannot read config file: larger than 1048576 bytes \(104857600 bytes\)/);
    expectOneLine(await runAgent(['--config', fifo]), /cannot read config file: a FIFO, not a regular file/);
  }, 90_000);

  it('a YAML unknown tag (!!js/function) is one line, not a library warning', async () => {
    const r = await runAgent(['--config', tag]);
    expectOneLine(r, /tag\.yaml: malformed YAML: Unresolved tag: tag:yaml\.org,2002:js\/function/);
    expect(r.stderr).not.toMatch(/YAMLWarning|trace-warnings/);
  }, 30_000);

  it('--auth-token-file /dev/zero, a 100 MB file, a FIFO: exit 2, one line', async () => {
    const srv = ['--server', 'http://127.0.0.1:9'];
    expectOneLine(await runAgent([...srv, '--auth-token-file', '/dev/zero']), /cannot read token file "\/dev\/zero": a character device/);
    expectOneLine(await runAgent([...srv, '--auth-token-file', big]), /cannot read token file .*larger than 65536 bytes/);
    expectOneLine(await runAgent([...srv, '--auth-token-file', fifo]), /cannot read token file .*a FIFO/);
  }, 90_000);

  it('--scenario /dev/urandom, a 100 MB file, a FIFO (fake backend): exit 2, one line', async () => {
    const fake = ['--gpu-backend', 'fake'];
    expectOneLine(await runAgent([...fake, '--scenario', '/dev/urandom']), /\/dev\/urandom: cannot read scenario: a character device/);
    expectOneLine(await runAgent([...fake, '--scenario', big]), /cannot read scenario: larger than 1048576 bytes/);
    expectOneLine(await runAgent([...fake, '--scenario', fifo]), /cannot read scenario: a FIFO/);
  }, 90_000);
});
