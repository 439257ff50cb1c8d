/**
 * The sd_notify fallback when the native addon is not installed: Node.js core cannot send
 * AF_UNIX datagrams, so each notification is handed to systemd's own `systemd-notify` binary.
 *
 * `systemd-notify --pid=<agent pid> KEY=VALUE...` sends the datagram with the agent's PID in
 * its credentials when it may (root), else with its own PID; by default it then waits on a
 * BARRIER=1 until systemd has processed the message, so systemd can still attribute a message
 * from the short-lived helper to the service's cgroup. A message whose sender is not the main
 * PID is accepted only with `NotifyAccess=all`, which the shipped unit sets for this reason
 * (the agent's cgroup holds only the agent and this helper).
 *
 * Bounded: at most `maxInFlight` helpers at once (more are dropped and reported), each killed
 * after `timeoutMs`, at most 1 KiB of its stderr kept.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';

export interface ExecSenderOptions {
  /** The systemd-notify binary. */
  path: string;
  /** PID named in --pid (the agent's own). */
  pid: number;
  /** Reports a helper that failed, timed out, or was dropped. */
  onError: (err: Error & { code?: string }) => void;
  /** Kill a helper after this long (default 10 s; systemd-notify's own barrier wait is 5 s). */
  timeoutMs?: number;
  /** Helpers allowed at once (default 4). */
  maxInFlight?: number;
}

/** The first executable `systemd-notify` on PATH, then in /usr/bin and /bin; null when none. */
export function findSystemdNotify(env: NodeJS.ProcessEnv = process.env): string | null {
  const dirs = [...(env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/')), '/usr/bin', '/bin'];
  for (const d of dirs) {
    const p = join(d, 'systemd-notify');
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

export class SystemdNotifySender {
  private inFlight = 0;
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;

  constructor(private readonly opts: ExecSenderOptions) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxInFlight = opts.maxInFlight ?? 4;
  }

  /** Helpers still running. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Starts one helper for `state` ("KEY=VALUE" lines) to `socket`. True when it was started;
   * its outcome is reported through onError only when it fails.
   */
  send(state: string, socket: string): boolean {
    if (this.inFlight >= this.maxInFlight) {
      this.opts.onError(Object.assign(new Error(`systemd-notify: ${this.inFlight} notifications still in flight; dropped one`), { code: 'EBUSY' }));
      return false;
    }
    const assignments = state.split('\n').filter((l) => l !== '');
    const child = spawn(this.opts.path, [`--pid=${this.opts.pid}`, ...assignments], {
      env: { NOTIFY_SOCKET: socket, PATH: '/usr/bin:/bin' },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: this.timeoutMs,
      killSignal: 'SIGKILL',
    });
    this.inFlight++;
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < 1024) stderr = (stderr + c).slice(0, 1024);
    });
    let done = false;
    const finish = (err: (Error & { code?: string }) | null): void => {
      if (done) return;
      done = true;
      this.inFlight--;
      if (err) this.opts.onError(err);
    };
    child.once('error', (e: Error & { code?: string }) =>
      finish(Object.assign(new Error(`systemd-notify (${this.opts.path}): ${e.message}`), { code: e.code ?? 'ESPAWN' })),
    );
    child.once('close', (code, signal) => {
      if (code === 0) return finish(null);
      const why = signal ? `killed by ${signal}${signal === 'SIGKILL' ? ` after ${this.timeoutMs} ms` : ''}` : `exited ${code}`;
      const text = stderr.replace(/\s+/g, ' ').trim();
      finish(Object.assign(new Error(`systemd-notify ${why}${text ? `: ${text}` : ''}`), { code: signal ? 'ETIMEDOUT' : `EXIT${code}` }));
    });
    return true;
  }
}
