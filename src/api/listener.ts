/**
 * Keeps the local API listening without ever stopping the agent: a listen that fails (most often
 * EADDRINUSE, another program on the port) is logged and tried again with capped exponential
 * backoff and full jitter (src/util/backoff.ts), for as long as the agent runs. Detection,
 * storage and delivery go on meanwhile; only /healthz, /status, /metrics and /inject are missing
 * until the port frees. The timer and the randomness are injected, so the schedule is testable.
 */
import type { Logger } from 'pino';
import { backoffMs } from '../util/backoff.js';
import type { ApiServer } from './server.js';

/** First retry within 1 s, then doubling up to 30 s between tries. */
export const LISTEN_RETRY = { baseMs: 1_000, capMs: 30_000 } as const;
/** A failure is logged at warn on the first try and then every this many; the others at debug. */
export const LISTEN_WARN_EVERY = 60;

export interface ApiListenStatus {
  /** The configured address, "host:port". */
  address: string;
  state: 'listening' | 'retrying' | 'stopped';
  /** "http://host:port" while listening, else null. */
  url: string | null;
  /** Failed tries so far (0 when the first one worked). */
  failures: number;
  /** Why the last try failed ("address already in use"), null when none has. */
  lastError: string | null;
  /** When the next try is due (ms since the epoch) while retrying, else null. */
  nextTryMs: number | null;
}

export interface ListenTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

const realTimers: ListenTimers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  now: () => Date.now(),
};

export interface ApiListenerOptions {
  host: string;
  port: number;
  /** One listen attempt (startApiServer with the agent's view). */
  listen: () => Promise<ApiServer>;
  log?: Logger;
  random?: () => number;
  timers?: ListenTimers;
  onListening?: (server: ApiServer) => void;
  /** Extra fields for the "local API listening" line. */
  logFields?: Record<string, unknown>;
}

/** "address already in use" for EADDRINUSE, else the error's code and message. */
export function listenErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EADDRINUSE') return 'address already in use';
  if (e?.code === 'EACCES') return 'permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)';
  if (e?.code === 'EADDRNOTAVAIL') return 'address not available on this host';
  return e?.message ?? String(err);
}

export class ApiListener {
  private server: ApiServer | null = null;
  private failures = 0;
  private lastError: string | null = null;
  private timer: unknown = null;
  private nextTryMs: number | null = null;
  private closed = false;
  private readonly timers: ListenTimers;
  private readonly random: () => number;
  readonly address: string;

  constructor(private readonly opts: ApiListenerOptions) {
    this.timers = opts.timers ?? realTimers;
    this.random = opts.random ?? Math.random;
    this.address = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`;
  }

  /** The first try; resolves whether or not it worked (a failure schedules the next try). */
  async start(): Promise<void> {
    await this.attempt();
  }

  get url(): string | null {
    return this.server?.url ?? null;
  }

  status(): ApiListenStatus {
    return {
      address: this.address,
      state: this.closed ? 'stopped' : this.server ? 'listening' : 'retrying',
      url: this.url,
      failures: this.failures,
      lastError: this.lastError,
      nextTryMs: this.server || this.closed ? null : this.nextTryMs,
    };
  }

  private async attempt(): Promise<void> {
    this.timer = null;
    this.nextTryMs = null;
    let server: ApiServer;
    try {
      server = await this.opts.listen();
    } catch (err) {
      if (this.closed) return;
      this.failures++;
      this.lastError = listenErrorText(err);
      const delay = backoffMs(this.failures - 1, LISTEN_RETRY.baseMs, LISTEN_RETRY.capMs, this.random);
      this.nextTryMs = this.timers.now() + delay;
      const warn = this.failures === 1 || this.failures % LISTEN_WARN_EVERY === 0;
      this.opts.log?.[warn ? 'warn' : 'debug'](
        { address: this.address, failures: this.failures, retryInMs: delay },
        `local API: cannot listen on ${this.address}: ${this.lastError}; the agent keeps running (detection, storage and delivery go on) and tries again (backoff up to ${LISTEN_RETRY.capMs / 1000} s)`,
      );
      this.timer = this.timers.setTimeout(() => void this.attempt(), delay);
      return;
    }
    if (this.closed) {
      await server.close();
      return;
    }
    this.server = server;
    this.opts.log?.info({ url: server.url, failedTries: this.failures, ...this.opts.logFields }, 'local API listening');
    this.opts.onListening?.(server);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    const s = this.server;
    this.server = null;
    await s?.close();
  }
}
