/**
 * Runs an operator hook (drain / cordon executable) for a control-plane command: no shell, a
 * deadline (SIGTERM, then SIGKILL 2 s later), bounded captured output. Deadlines run on the
 * given clock (the link's; the system clock by default).
 */
import { spawn } from 'node:child_process';
import { systemClock, type CancelTimer, type Clock } from '../util/clock.js';

export interface HookResult {
  ok: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Last bytes of stdout+stderr (at most 4 KiB). */
  output: string;
  /** Spawn error (ENOENT, EACCES, ...). */
  error?: string;
  durationMs: number;
}

const MAX_OUTPUT = 4096;
/** After the hook exited, how long to wait for its output pipes (a background child may hold them). */
const PIPE_GRACE_MS = 1000;

/** The agent's environment minus its bearer token: a hook gets what it needs, not the credential. */
function hookEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NAVARCH_AUTH_TOKEN;
  return env;
}

export function runHook(path: string, args: string[], env: Record<string, string>, timeoutMs: number, clock: Clock = systemClock): Promise<HookResult> {
  const started = clock.now();
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    let settled = false;
    let killTimer: CancelTimer | null = null;
    let graceTimer: CancelTimer | null = null;
    const finish = (r: Omit<HookResult, 'durationMs' | 'output' | 'timedOut'>): void => {
      if (settled) return;
      settled = true;
      cancelTimer();
      killTimer?.();
      graceTimer?.();
      resolve({ ...r, timedOut, output, durationMs: clock.now() - started });
    };
    let child;
    try {
      child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: hookEnv(env) });
    } catch (e) {
      resolve({ ok: false, exitCode: null, signal: null, timedOut: false, output: '', error: (e as Error).message, durationMs: 0 });
      return;
    }
    const keep = (b: Buffer): void => {
      output = (output + b.toString('utf8')).slice(-MAX_OUTPUT);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const cancelTimer = clock.setTimer(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = clock.setTimer(() => child.kill('SIGKILL'), 2000);
    }, timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, exitCode: null, signal: null, error: `${e.code ?? ''} ${e.message}`.trim() }));
    child.on('close', (code, signal) => finish({ ok: code === 0 && !timedOut, exitCode: code, signal }));
    // 'close' waits for stdout/stderr to close too; a background process the hook left behind keeps
    // them open, which would make the deadline meaningless. Once the hook itself has exited, give the
    // pipes a moment, then stop reading them and finish.
    child.on('exit', (code, signal) => {
      graceTimer = clock.setTimer(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish({ ok: code === 0 && !timedOut, exitCode: code, signal });
      }, PIPE_GRACE_MS);
    });
  });
}
