/**
 * Helpers for the agent's end-to-end tests: spawn the built CLI (`node dist/cli/main.js run`) as
 * a real process on a free loopback port with a temp state dir, poll its local API, stop it with
 * a signal and collect its JSON log lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentStatus } from '../../src/api/types.js';
import { poll } from '../helpers/wait.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MAIN_JS = join(REPO_ROOT, 'dist', 'cli', 'main.js');
export const DIST_BUILT = existsSync(MAIN_JS);
/** The package's bin: the bundled CLI (scripts/bundle.mjs). */
export const BUNDLE_JS = join(REPO_ROOT, 'dist', 'cli', 'navarch-agent.mjs');

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `navarch-${prefix}-`));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `fn` until it returns a truthy value; throws with `what` after timeoutMs. Errors count as "not yet". */
export function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  return poll(what, fn, { timeoutMs, everyMs, retryErrors: true }) as Promise<T>;
}

export interface LogLine {
  level: number;
  msg: string;
  component?: string;
  [k: string]: unknown;
}

export interface AgentProcess {
  proc: ChildProcess;
  url: string;
  port: number;
  stateDir: string;
  logs: LogLine[];
  stderr: () => string;
  status(): Promise<AgentStatus>;
  metrics(): Promise<string>;
  inject(body: object): Promise<Response>;
  /** Send a signal and wait for the exit code (kills with SIGKILL after timeoutMs). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface StartAgentOptions {
  args?: string[];
  env?: Record<string, string>;
  stateDir?: string;
  /** Wait for /healthz (default true). */
  waitReady?: boolean;
  /** The script to run (default dist/cli/main.js). */
  entry?: string;
  /** The command before the flags (default "run"); null starts it as Navarch's Go daemon is started, with flags only. */
  command?: string | null;
  /** Arguments for node itself (e.g. ["--require", hook]). */
  nodeArgs?: string[];
  /** Listen on this port (default: a free one); e.g. a port the test holds, to see the agent run without its API. */
  port?: number;
  /** Do not pass --state-dir (the agent picks it: $STATE_DIRECTORY or the default). */
  noStateDirFlag?: boolean;
}

export async function startAgent(opts: StartAgentOptions = {}): Promise<AgentProcess> {
  const port = opts.port ?? (await freePort());
  const stateDir = opts.stateDir ?? tempDir('agent-state');
  const command = opts.command === undefined ? ['run'] : opts.command === null ? [] : [opts.command];
  const stateDirArgs = opts.noStateDirFlag ? [] : ['--state-dir', stateDir];
  const args = [...(opts.nodeArgs ?? []), opts.entry ?? MAIN_JS, ...command, '--listen', `127.0.0.1:${port}`, ...stateDirArgs, ...(opts.args ?? [])];
  const proc = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NAVARCH_LOG_FORMAT: 'json', ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  let buf = '';
  proc.stdout?.setEncoding('utf8');
  proc.stdout?.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ level: 0, msg: line });
      }
    }
  });
  let err = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => (err += d));
  // 'close' (not 'exit'): resolves only after stdout/stderr were read to the end.
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const agent: AgentProcess = {
    proc,
    url,
    port,
    stateDir,
    logs,
    stderr: () => err,
    status: async () => (await (await fetch(`${url}/status`, { signal: AbortSignal.timeout(10_000) })).json()) as AgentStatus,
    metrics: async () => (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text(),
    inject: (body) =>
      fetch(`${url}/inject`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      }),
    stop: async (signal = 'SIGTERM', timeoutMs = 30_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
    exited,
  };
  if (opts.waitReady !== false) {
    const early = exited.then((code) => {
      throw new Error(
        `agent exited with ${code} before it was ready: ${err.trim()} ${logs
          .slice(-5)
          .map((l) => l.msg)
          .join(' | ')}`,
      );
    });
    await Promise.race([waitFor('agent /healthz', async () => (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) })).ok, 60_000), early]);
    early.catch(() => undefined);
  }
  return agent;
}

/** Value of a Prometheus sample whose name and labels contain the given fragments. */
export function metricValue(text: string, name: string, ...labelFragments: string[]): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labelFragments.every((f) => line.includes(f))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return null;
}
