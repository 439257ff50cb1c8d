/**
 * What the parts of the control-plane link share: the options, the clock, the lifecycle flags,
 * the counters behind LinkStatus, and the RPC plumbing (every call's outcome recorded, a backoff
 * that any successful call ends early, configuration errors surfaced). No loop of its own.
 */
import { Code, ConnectError } from '@connectrpc/connect';
import pino, { type Logger } from 'pino';
import { systemClock, type CancelTimer, type Clock } from '../../util/clock.js';
import { truncateText } from '../../util/truncate.js';
import type { RetryPolicy } from '../retry.js';
import type { AgentLinkOptions, LinkStatus, RpcInfo } from './types.js';

const CONFIG_CODES = new Set([Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied]);
const TLS_TRUST = /certificate|self[- ]signed|unable to (get|verify)|CERT_|ERR_TLS_CERT|handshake failure|bad certificate/i;

/**
 * Errors that retrying fast cannot fix: InvalidArgument, Unauthenticated (HTTP 401),
 * PermissionDenied, and TLS trust failures (wrong CA bundle, rejected client certificate).
 */
export function isConfigError(e: ConnectError): boolean {
  if (CONFIG_CODES.has(e.code)) return true;
  const cause = e.cause as NodeJS.ErrnoException | undefined;
  return TLS_TRUST.test(e.rawMessage) || (cause !== undefined && TLS_TRUST.test(`${cause.code ?? ''} ${cause.message ?? ''}`));
}

/** Connect code as a snake_case name ("deadline_exceeded"). */
export function codeName(c: Code): string {
  return (Code[c] ?? 'unknown').replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
}

/** Failures logged at warn: the 1st, 2nd, 4th, 8th, ... of a run (fast retries must not flood the log). */
export function worthLogging(attempt: number): boolean {
  return (attempt & (attempt + 1)) === 0;
}

/** A locally configured interval (ms): the default when unset; outside [100 ms, 1 h] is a usage error. */
export function localInterval(v: number | undefined, defaultMs: number, name: string): number {
  if (v === undefined) return defaultMs;
  if (!Number.isFinite(v) || v < 100 || v > 3_600_000) throw new Error(`${name} must be within [100 ms, 1 h], got ${v}`);
  return v;
}

export class LinkCore {
  readonly o: AgentLinkOptions;
  readonly log: Logger;
  readonly clock: Clock;
  readonly rnd: () => number;
  /** Aborted at the end of shutdown: cancels every call in flight and every sleep. */
  readonly abort = new AbortController();
  readonly retry: RetryPolicy;
  readonly providerTimeoutMs: number;

  stopping = false;
  stopped = false;
  registered = false;
  /** Bumped on every (re-)registration: work of an older registration stops. */
  generation = 0;
  nodeId: string | null = null;

  readonly st = {
    registrations: 0,
    configError: null as string | null,
    lastError: null as LinkStatus['lastError'],
    lastSuccessMs: null as number | null,
    lastRegisteredMs: null as number | null,
    nodeStatus: null as string | null,
    eventsDelivered: 0,
    reportsSent: 0,
    heartbeatsSent: 0,
    commandsHandled: 0,
  };

  /** The control plane answered NotFound (it forgot the node); set by the composition. */
  onForgotten: (method: string) => void = () => {};

  private readonly sleepers = new Set<() => void>();

  constructor(opts: AgentLinkOptions) {
    this.o = opts;
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.clock = opts.clock ?? systemClock;
    this.rnd = opts.random ?? Math.random;
    this.retry = { baseMs: opts.retry?.baseMs ?? 500, capMs: opts.retry?.capMs ?? 30_000, random: this.rnd };
    this.providerTimeoutMs = opts.providerTimeoutMs ?? 5000;
  }

  /** One RPC: the abort signal and the client's deadline, the outcome recorded (status, onRpc). */
  async call<T>(method: RpcInfo['method'], fn: (o: { signal: AbortSignal; timeoutMs: number }) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn({ signal: this.abort.signal, timeoutMs: this.o.client.timeoutMs });
      this.st.lastSuccessMs = this.clock.now();
      // The control plane answers: a retry waiting out its backoff goes now (held events are
      // delivered at once after an outage, not at the end of a backoff of up to 30 s).
      this.wakeSleepers();
      this.o.onRpc?.({ method, ok: true, code: null, durationMs: performance.now() - t0 });
      return r;
    } catch (e) {
      const ce = ConnectError.from(e);
      const code = codeName(ce.code);
      this.st.lastError = { method, code, message: truncateText(ce.rawMessage), atMs: this.clock.now() };
      this.o.onRpc?.({ method, ok: false, code, durationMs: performance.now() - t0 });
      throw ce;
    }
  }

  /** A retry's wait: ends after ms, when a call succeeds, or at shutdown. */
  backoff(ms: number): Promise<void> {
    if (this.abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      let cancel: CancelTimer = () => {};
      const done = (): void => {
        cancel();
        this.sleepers.delete(done);
        resolve();
      };
      cancel = this.clock.setTimer(done, ms);
      this.sleepers.add(done);
    });
  }

  /** Ends every waiting backoff now. */
  wakeSleepers(): void {
    for (const s of [...this.sleepers]) s();
  }

  /** A configuration error after registration (token rotated, CA changed): surface it loudly. */
  noteConfigError(ce: ConnectError): void {
    if (!isConfigError(ce)) return;
    const msg = `control-plane configuration error (${codeName(ce.code)}): ${truncateText(ce.rawMessage)}`;
    if (this.st.configError !== msg) this.log.error({ code: codeName(ce.code) }, msg);
    this.st.configError = msg;
  }
}
