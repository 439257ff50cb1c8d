/**
 * systemd readiness and watchdog notifications (sd_notify(3)) for a `Type=notify` unit.
 *
 * The datagram is sent by the native addon (`sdNotify` in native/sd_notify.cc: AF_UNIX
 * SOCK_DGRAM to `$NOTIFY_SOCKET`, abstract `@` names included, no libsystemd). Without the addon
 * each notification goes through systemd's `systemd-notify` binary instead (notify-exec.ts; the
 * unit's NotifyAccess=all lets systemd accept it). Everything here is a no-op when
 * `NOTIFY_SOCKET` is unset (not started by systemd) or neither way is available, so callers never
 * need to check whether they run under systemd.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { findSystemdNotify, SystemdNotifySender } from './notify-exec.js';

/** The raw addon export this module uses. */
export interface SdNotifyBinding {
  /** Sends one datagram; false when no socket is configured; throws on a send error. */
  sdNotify(state: string, socketPath?: string): boolean;
}

export interface NotifierOptions {
  /** Environment to read NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID from, at call time. */
  env?: NodeJS.ProcessEnv;
  /** The addon; `null` means none (the systemd-notify fallback is used); default: loaded lazily with node-gyp-build. */
  binding?: SdNotifyBinding | null;
  /** The systemd-notify binary used without the addon; `null` disables the fallback; default: found on PATH, /usr/bin, /bin. */
  systemdNotify?: string | null;
  /** Called once per distinct failure (no way to notify, or a send error); default: a process warning. */
  onError?: (err: Error) => void;
  /** PID compared with WATCHDOG_PID (default process.pid). */
  pid?: number;
}

export interface WatchdogOptions {
  /** Checked before every ping: a false answer skips the ping so systemd restarts a wedged agent. */
  healthy?: () => boolean;
}

export interface WatchdogHandle {
  /** Milliseconds between pings (half of WATCHDOG_USEC). */
  readonly intervalMs: number;
  /** Whether the timer keeps the event loop alive (always false: it is unref'd). */
  readonly hasRef: boolean;
  /** Pings sent so far. */
  readonly sent: number;
  stop(): void;
}

/** The root of the package (src/systemd/ and dist/systemd/ are both two levels down). */
const packageRoot = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Loads the addon through node-gyp-build (build/Release, then prebuilds/<platform>-<arch>; the
 * directory can be overridden with NAVARCH_AGENT_PREBUILD, node-gyp-build's own convention).
 * Throws with the places node-gyp-build looked when nothing loads.
 */
export function loadSdNotifyBinding(root: string = packageRoot): SdNotifyBinding {
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => unknown;
  const mod = load(root) as Partial<SdNotifyBinding>;
  if (typeof mod.sdNotify !== 'function') {
    throw new Error(`the native addon under ${root} has no sdNotify export (addon too old?)`);
  }
  return mod as SdNotifyBinding;
}

/** Keeps one assignment per line: a newline in free text would start a new KEY=VALUE. */
function oneLine(text: string, max = 1024): string {
  // eslint-disable-next-line no-control-regex
  const flat = text.replace(/[\r\n\u0000]+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}

/** Parses WATCHDOG_USEC/WATCHDOG_PID the way sd_watchdog_enabled(3) does; null when disabled. */
export function watchdogIntervalUsec(env: NodeJS.ProcessEnv, pid: number = process.pid): number | null {
  const usecRaw = env.WATCHDOG_USEC;
  if (usecRaw === undefined || usecRaw === '') return null;
  if (!/^[0-9]+$/.test(usecRaw)) return null;
  const usec = Number(usecRaw);
  if (!Number.isSafeInteger(usec) || usec <= 0) return null;
  const pidRaw = env.WATCHDOG_PID;
  if (pidRaw !== undefined && pidRaw !== '') {
    if (!/^[0-9]+$/.test(pidRaw) || Number(pidRaw) !== pid) return null;
  }
  return usec;
}

/** How notifications leave this process. */
export type NotifyTransport = 'addon' | 'systemd-notify' | 'none';

interface Sender {
  transport: Exclude<NotifyTransport, 'none'>;
  send(state: string, socket: string): boolean;
}

export class Notifier {
  private readonly env: NodeJS.ProcessEnv;
  private readonly pid: number;
  private readonly onError: (err: Error) => void;
  private readonly bindingOpt: SdNotifyBinding | null | undefined;
  private readonly systemdNotifyOpt: string | null | undefined;
  private sender: Sender | null | undefined;
  private lastErrorCode: string | undefined;

  constructor(opts: NotifierOptions = {}) {
    this.env = opts.env ?? process.env;
    this.pid = opts.pid ?? process.pid;
    this.bindingOpt = opts.binding;
    this.systemdNotifyOpt = opts.systemdNotify;
    this.onError = opts.onError ?? ((err) => process.emitWarning(`sd_notify: ${err.message}`, { code: 'NAVARCH_SD_NOTIFY' }));
  }

  /** Reports an error unless it has the same code as the previous one. */
  private report(err: Error & { code?: string }): void {
    const code = err.code ?? err.message;
    if (code === this.lastErrorCode) return;
    this.lastErrorCode = code;
    this.onError(err);
  }

  /** The socket systemd gave us, if any. */
  get socket(): string | undefined {
    const s = this.env.NOTIFY_SOCKET;
    return s === undefined || s === '' ? undefined : s;
  }

  /** True when running under a notify-aware manager and a way to notify it exists. */
  get enabled(): boolean {
    return this.socket !== undefined && this.getSender() !== null;
  }

  /** How notifications are sent ('none' when not under systemd or no way exists). */
  get transport(): NotifyTransport {
    if (this.socket === undefined) return 'none';
    return this.getSender()?.transport ?? 'none';
  }

  /** The addon when it loads, else systemd-notify when it exists, else null (reported once). */
  private getSender(): Sender | null {
    if (this.sender !== undefined) return this.sender;
    let addonWhy = 'none given';
    let binding = this.bindingOpt;
    if (binding === undefined) {
      try {
        binding = loadSdNotifyBinding();
      } catch (e) {
        binding = null;
        addonWhy = String((e as Error).message ?? e).split('\n')[0] ?? '';
      }
    }
    if (binding) {
      const b = binding;
      this.sender = { transport: 'addon', send: (state, sock) => b.sdNotify(state, sock) };
      return this.sender;
    }
    const path = this.systemdNotifyOpt === undefined ? findSystemdNotify(this.env) : this.systemdNotifyOpt;
    if (path !== null) {
      const exec = new SystemdNotifySender({ path, pid: this.pid, onError: (err) => this.report(err) });
      this.sender = { transport: 'systemd-notify', send: (state, sock) => exec.send(state, sock) };
      return this.sender;
    }
    this.sender = null;
    this.onError(new Error(`notifications disabled: no native addon (${addonWhy}) and no systemd-notify binary`));
    return null;
  }

  /**
   * Sends raw assignments ("READY=1\nSTATUS=..."). Returns true when the datagram was sent by
   * the addon or handed to systemd-notify (whose failure is reported later via onError), false
   * when not under systemd, no way to notify exists, or the send failed (reported via onError
   * once per distinct error code).
   */
  notify(state: string): boolean {
    if (typeof state !== 'string' || state === '') throw new TypeError('notify(state): state must be a non-empty string');
    const sock = this.socket;
    if (sock === undefined) return false;
    const sender = this.getSender();
    if (sender === null) return false;
    try {
      const sent = sender.send(state, sock);
      if (sent && sender.transport === 'addon') this.lastErrorCode = undefined;
      return sent;
    } catch (e) {
      this.report(e as Error & { code?: string });
      return false;
    }
  }

  /** READY=1 (optionally with a STATUS line): startup is complete. */
  ready(statusText?: string): boolean {
    return this.notify(statusText === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(statusText)}`);
  }

  /** STATUS=<text>, shown by `systemctl status`. */
  status(text: string): boolean {
    return this.notify(`STATUS=${oneLine(text)}`);
  }

  /** STOPPING=1: shutdown has begun. */
  stopping(statusText?: string): boolean {
    return this.notify(statusText === undefined ? 'STOPPING=1' : `STOPPING=1\nSTATUS=${oneLine(statusText)}`);
  }

  /** One WATCHDOG=1 keep-alive. */
  watchdog(): boolean {
    return this.notify('WATCHDOG=1');
  }

  /**
   * Pings WATCHDOG=1 at half of WATCHDOG_USEC (once immediately) from an unref'd timer. Returns
   * null when the watchdog is not enabled for this process (no WATCHDOG_USEC, WATCHDOG_PID is
   * another process, no NOTIFY_SOCKET, or no way to notify).
   */
  startWatchdog(opts: WatchdogOptions = {}): WatchdogHandle | null {
    const usec = watchdogIntervalUsec(this.env, this.pid);
    if (usec === null || !this.enabled) return null;
    const intervalMs = Math.max(1, Math.floor(usec / 2000));
    let sent = 0;
    const tick = (): void => {
      if (opts.healthy !== undefined) {
        let ok: boolean;
        try {
          ok = opts.healthy();
        } catch {
          ok = false;
        }
        if (!ok) return;
      }
      if (this.watchdog()) sent++;
    };
    tick();
    const timer = setInterval(tick, intervalMs);
    timer.unref();
    return {
      intervalMs,
      get hasRef() {
        return timer.hasRef();
      },
      get sent() {
        return sent;
      },
      stop() {
        clearInterval(timer);
      },
    };
  }
}

let defaultNotifier: Notifier | undefined;

/** The process-wide notifier over process.env (the addon is loaded on first use). */
export function getNotifier(): Notifier {
  defaultNotifier ??= new Notifier();
  return defaultNotifier;
}

export const notify = (state: string): boolean => getNotifier().notify(state);
export const ready = (statusText?: string): boolean => getNotifier().ready(statusText);
export const status = (text: string): boolean => getNotifier().status(text);
export const stopping = (statusText?: string): boolean => getNotifier().stopping(statusText);
export const startWatchdog = (opts?: WatchdogOptions): WatchdogHandle | null => getNotifier().startWatchdog(opts);
