/**
 * `navarch-agent demo` (what `npm start` runs): the scripted XID 79 reaches the in-process dev
 * control plane, which turns the node UNHEALTHY; Ctrl-C (SIGINT) exits 0 and removes the temp state.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, waitFor } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping the demo e2e test: ${MAIN_JS} is not built (npm run build)`);

describe.skipIf(!DIST_BUILT)('navarch-agent demo', () => {
  it('shows the fault reach the control plane and exits cleanly on SIGINT', async () => {
    const p = spawn(process.execPath, [MAIN_JS, 'demo', '--json', '--log-level', 'silent'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH },
    });
    const lines: Array<Record<string, unknown>> = [];
    let buf = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
        buf = buf.slice(nl + 1);
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
    try {
      await waitFor('XID 79 at the control plane', () => lines.some((l) => l.kind === 'event' && l.eventType === 'xid' && l.verdict === 'unhealthy'), 45_000);
      const view = await waitFor(
        'node UNHEALTHY in the view',
        () => lines.find((l) => l.kind === 'view' && (l.node as { status?: string } | null)?.status === 'unhealthy'),
        45_000,
      );
      const faults = view.activeFaults as Array<{ key: string }>;
      expect(faults.map((f) => f.key)).toContain('gpu3/xid/79');
      p.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(err).toBe('');
      const stateDir = (lines.find((l) => l.kind === 'view') as { stateDir?: string } | undefined)?.stateDir;
      expect(stateDir).toMatch(/navarch-demo-/);
      expect(existsSync(stateDir as string)).toBe(false);
    } finally {
      p.kill('SIGKILL');
    }
  });
});

/** Spawn the demo with --json; returns its lines, stderr and exit code. */
function demo(args: string[]): { lines: Array<Record<string, unknown>>; err: () => string; exited: Promise<number | null>; p: ReturnType<typeof spawn> } {
  const p = spawn(process.execPath, [MAIN_JS, 'demo', '--json', '--log-level', 'silent', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH },
  });
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => p.on('close', (c) => r(c)));
  return { lines, err: () => err, exited, p };
}

describe.skipIf(!DIST_BUILT)('navarch-agent demo ends', () => {
  it('by itself after its scenario, with a summary of what the control plane saw', async () => {
    const d = demo([]);
    try {
      expect(await d.exited).toBe(0);
      expect(d.err()).toBe('');
      const summary = d.lines.at(-1) as {
        kind: string;
        stoppedBy: string;
        seconds: number;
        node: { health: string } | null;
        eventsReceived: Record<string, number>;
        activeFaults: string[];
        stateDir: string;
      };
      expect(summary.kind).toBe('summary');
      expect(summary.stoppedBy).toBe('end of the demo');
      expect(summary.seconds).toBeGreaterThanOrEqual(14); // after the last scripted step (t+14s)
      expect(summary.eventsReceived.xid).toBeGreaterThanOrEqual(1);
      expect(summary.activeFaults).toContain('gpu3/xid/79');
      expect(summary.node?.health).toBe('unhealthy');
      expect(existsSync(summary.stateDir)).toBe(false);
    } finally {
      d.p.kill('SIGKILL');
    }
  }, 60_000);

  it('on SIGHUP: exit 0, a summary, the temp dir removed', async () => {
    const d = demo(['--duration', '10m']);
    try {
      const view = await waitFor('first view', () => d.lines.find((l) => l.kind === 'view'), 45_000);
      d.p.kill('SIGHUP');
      expect(await d.exited).toBe(0);
      const summary = d.lines.at(-1) as { kind: string; stoppedBy: string; stateDir: string };
      expect(summary.kind).toBe('summary');
      expect(summary.stoppedBy).toBe('SIGHUP');
      expect(summary.stateDir).toBe(view.stateDir);
      expect(existsSync(summary.stateDir)).toBe(false);
    } finally {
      d.p.kill('SIGKILL');
    }
  }, 60_000);
});
