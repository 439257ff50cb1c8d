/**
 * Registration: RegisterNode with the full inventory, retried forever (transient failures under
 * the retry policy of src/controlplane/retry.ts, configuration errors slowly), the intervals the
 * control plane answers with, and re-registration when the control plane forgot the node
 * (NotFound on a heartbeat or report).
 */
import { Code, ConnectError } from '@connectrpc/connect';
import { jittered } from '../../util/backoff.js';
import { bounded } from '../../util/clock.js';
import { truncateText } from '../../util/truncate.js';
import { retryDelayMs } from '../retry.js';
import { inventoryToRegisterRequest } from '../wire.js';
import { codeName, isConfigError, localInterval, worthLogging, type LinkCore } from './core.js';

const DEFAULT_HEARTBEAT_MS = 30_000;
const DEFAULT_HEALTH_MS = 60_000;
const MIN_SERVER_INTERVAL_S = 1;
const MAX_SERVER_INTERVAL_S = 3600;

/**
 * Validates an interval (seconds) from the control plane: 0, negative, non-integer garbage ->
 * the default; otherwise clamped to [1 s, 1 h]. Returns milliseconds.
 */
export function validateServerInterval(seconds: number | undefined, defaultMs: number): { ms: number; adjusted: boolean } {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds <= 0) return { ms: defaultMs, adjusted: true };
  const clamped = Math.min(MAX_SERVER_INTERVAL_S, Math.max(MIN_SERVER_INTERVAL_S, seconds));
  return { ms: clamped * 1000, adjusted: clamped !== seconds };
}

export interface RegistrationEvents {
  /** A (re-)registration begins: the loops of the previous one stop. */
  onUnregistered: () => void;
  /** Registered (the core says so); reason "start" or "not_found". */
  onRegistered: () => void;
}

export class Registration {
  /** The configured intervals (used when the control plane sends 0 or nothing). */
  private readonly localHeartbeatMs: number;
  private readonly localHealthMs: number;
  heartbeatMs: number;
  healthMs: number;
  private readonly configErrorMs: number;
  private registering: Promise<void> | null = null;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly c: LinkCore,
    private readonly on: RegistrationEvents,
  ) {
    this.heartbeatMs = this.localHeartbeatMs = localInterval(c.o.heartbeatIntervalMs, DEFAULT_HEARTBEAT_MS, 'heartbeatIntervalMs');
    this.healthMs = this.localHealthMs = localInterval(c.o.healthIntervalMs, DEFAULT_HEALTH_MS, 'healthIntervalMs');
    this.configErrorMs = c.o.retry?.configErrorMs ?? 60_000;
  }

  /** Resolves once registered (immediately when already registered). */
  whenRegistered(): Promise<void> {
    if (this.c.registered) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Registers in the background unless a registration is already under way (or the link stops). */
  ensure(reason: string): void {
    const c = this.c;
    if (this.registering || c.stopping || c.stopped) return;
    c.registered = false;
    c.generation += 1;
    this.on.onUnregistered();
    this.registering = this.loop(reason).finally(() => {
      this.registering = null;
    });
  }

  /** The control plane answered NotFound: it forgot the node. Re-register (the delivery re-asserts). */
  forgotten(method: string): void {
    const c = this.c;
    if (!c.registered) return;
    if (c.stopping) {
      // No re-registration while stopping: the final flush ends here (otherwise the shutdown loop
      // re-sends the report every few ms until its deadline); events stay in the store.
      c.registered = false;
      c.log.warn({ method }, 'control plane does not know this node (NotFound) while stopping: final report skipped');
      return;
    }
    c.log.warn({ method }, 'control plane does not know this node (NotFound): re-registering');
    this.ensure('not_found');
  }

  private async loop(reason: string): Promise<void> {
    const c = this.c;
    let attempt = 0;
    while (!c.stopping && !c.abort.signal.aborted) {
      let delay: number;
      try {
        const inv = await bounded(c.clock, c.o.inventory(), c.providerTimeoutMs, 'inventory provider');
        if (!inv.nodeId) throw new ConnectError('node id is empty (set --node-id or the hostname)', Code.InvalidArgument);
        const req = inventoryToRegisterRequest(inv);
        const res = await c.call('RegisterNode', (o) => c.o.client.rpc.registerNode(req, o));
        if (!res.success) throw new ConnectError(`registration rejected: ${truncateText(res.message)}`, Code.Unavailable);
        if (c.stopping) return;
        c.nodeId = inv.nodeId;
        const hb = validateServerInterval(res.config?.heartbeatIntervalSeconds, this.localHeartbeatMs);
        const hc = validateServerInterval(res.config?.healthCheckIntervalSeconds, this.localHealthMs);
        if (hb.adjusted || hc.adjusted) {
          c.log.warn(
            { heartbeatIntervalSeconds: res.config?.heartbeatIntervalSeconds, healthCheckIntervalSeconds: res.config?.healthCheckIntervalSeconds },
            `control plane sent out-of-range intervals; using heartbeat ${hb.ms} ms, health ${hc.ms} ms`,
          );
        }
        if (res.config) {
          this.heartbeatMs = hb.ms;
          this.healthMs = hc.ms;
        }
        c.registered = true;
        c.st.registrations += 1;
        c.st.lastRegisteredMs = c.clock.now();
        if (c.st.configError) c.log.info('control-plane configuration error resolved');
        c.st.configError = null;
        c.log.info(
          { nodeId: inv.nodeId, gpus: inv.gpus.length, reason, registrations: c.st.registrations, activeFaults: c.o.store.activeFaults().length },
          'registered with the control plane',
        );
        this.on.onRegistered();
        for (const w of this.waiters.splice(0)) w();
        return;
      } catch (e) {
        if (c.stopping) return;
        const ce = ConnectError.from(e);
        if (isConfigError(ce)) {
          const msg = `control-plane configuration error (${codeName(ce.code)}): ${truncateText(ce.rawMessage)}; retrying every ${Math.round(this.configErrorMs / 1000)} s`;
          c.st.configError = msg;
          c.log.error({ code: codeName(ce.code), url: c.o.client.url.origin }, msg);
          delay = jittered(this.configErrorMs, c.rnd);
        } else {
          const r = retryDelayMs(ce, attempt, c.retry);
          delay = r.ms;
          if (worthLogging(attempt))
            c.log.warn({ code: codeName(ce.code), err: ce.rawMessage, refused: r.refused, retryInMs: delay, attempt: attempt + 1 }, 'registration failed');
        }
        attempt += 1;
      }
      await c.backoff(delay);
    }
  }
}
