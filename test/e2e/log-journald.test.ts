/**
 * journald priorities through a real agent process: with JOURNAL_STREAM naming its stdout (as
 * systemd sets it), every JSON line starts with its syslog priority `<N>`; with JOURNAL_STREAM
 * naming another stream (a shell started from a service), lines stay plain JSON. The first line
 * is a short "starting" line, not the configuration.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, freePort, tempDir, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping journald log test: ${MAIN_JS} is not built (npm run build)`);

/** Run the agent until /healthz answers, SIGTERM it, return its stdout lines. */
async function agentLines(journalStream: 'stdout' | 'other'): Promise<string[]> {
  const port = await freePort();
  // fd 3 is the agent's stdout pipe; stat(1) reads its "dev:ino" the way systemd writes it.
  const setStream =
    journalStream === 'stdout' ? 'exec 3>&1; JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/3); export JOURNAL_STREAM; ' : 'export JOURNAL_STREAM=1:1; ';
  const script = `${setStream}exec "$0" "$@"`;
  const args = [MAIN_JS, 'run', '--gpu-backend', 'fake', '--kmsg-path', 'none', '--listen', `127.0.0.1:${port}`, '--state-dir', tempDir('journald')];
  const proc = spawn('/bin/sh', ['-c', script, process.execPath, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NAVARCH_LOG_FORMAT: 'json', NAVARCH_GPU_COUNT: '2' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const closed = new Promise<number | null>((r) => proc.on('close', r));
  try {
    await waitFor('agent /healthz', async () => (await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) })).ok, 60_000);
  } finally {
    proc.kill('SIGTERM');
  }
  expect(await closed, err).toBe(0);
  return out.split('\n').filter((l) => l !== '');
}

describe.skipIf(!DIST_BUILT)('logs under journald', () => {
  it('prefixes each line with its syslog priority when stdout is the journal stream', async () => {
    const lines = await agentLines('stdout');
    expect(lines.length).toBeGreaterThan(2);
    const priorities = new Map<number, number>([[10, 7], [20, 7], [30, 6], [40, 4], [50, 3], [60, 2]]);
    for (const line of lines) {
      const m = /^<(\d)>(\{.*\})$/.exec(line);
      expect(m, line).not.toBeNull();
      const rec = JSON.parse(m![2]!) as { level: number };
      expect(Number(m![1]), line).toBe(priorities.get(rec.level));
    }
    // The warning about the missing token reaches journald as priority 4 (warning).
    expect(lines.some((l) => l.startsWith('<4>') && l.includes('no auth token configured'))).toBe(true);
    const first = JSON.parse(lines[0]!.slice(3)) as Record<string, unknown>;
    expect(first.msg).toBe('navarch-agent starting');
    expect(first).not.toHaveProperty('config');
    expect(lines[0]!.length).toBeLessThan(400);
  }, 90_000);

  it('writes plain JSON when JOURNAL_STREAM names a different stream', async () => {
    const lines = await agentLines('other');
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(line.startsWith('{"level":'), line).toBe(true);
  }, 90_000);
});
