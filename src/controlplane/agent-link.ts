/**
 * The agent's link to Navarch's control plane: registration (forever, with backoff), heartbeats,
 * health delivery (push on append, at-least-once, one ReportHealth in flight, ack to the store
 * only after `acknowledged`), periodic check reports, command polling and handling, re-registration
 * with fault re-assertion when the control plane forgot the node, and a graceful shutdown.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import pino, { type Logger } from 'pino';
import type { HealthEvent } from '../events/types.js';
import type { EventStore } from '../store/types.js';
import {
  GetNodeCommandsRequestSchema,
  HeartbeatRequestSchema,
  NodeCommandType,
  NodeStatus,
  ReportHealthRequestSchema,
  type NodeCommand,
} from '../gen/navarch/control_plane_pb.js';
import type { ControlPlaneClient } from './client.js';
import { runHook, type HookResult } from './hooks.js';
import { FILE_LIMITS, readBoundedTextSync } from '../util/bounded-file.js';
import { truncateText } from '../util/truncate.js';
import { retryDelayMs, type RetryPolicy } from './retry.js';
import { jittered } from '../util/backoff.js';
import { wholeState, type VerdictMode } from './node-state.js';
import {
  eventToProtoSafe,
  faultToProto,
  inventoryToRegisterRequest,
  metricsToProto,
  resultToProto,
} from './wire.js';
import type { CheckResult, NodeInventory, NodeMetricsSample } from './model.js';

export type { CheckResult, NodeInventory, NodeMetricsSample };

/** Exit status the owner should use after TERMINATE (see docs/controlplane.md). */
export const TERMINATE_EXIT_CODE = 0;
/** Marker written to the state dir on TERMINATE; while it exists the link does not register. */
export const TERMINATION_MARKER = 'terminated.json';

export interface TerminationMarker {
  commandId: string;
  nodeId: string;
  timeMs: number;
  reason: string;
}

export interface TerminateInfo {
  exitCode: number;
  commandId: string;
  markerPath: string | null;
  parameters: Record<string, string>;
}

export interface RpcInfo {
  method: 'RegisterNode' | 'ReportHealth' | 'SendHeartbeat' | 'GetNodeCommands';
  ok: boolean;
  /** Connect code name on failure ("unavailable", "not_found", "deadline_exceeded", ...). */
  code: string | null;
  durationMs: number;
}

export interface LinkStatus {
  nodeId: string | null;
  url: string;
  registered: boolean;
  registrations: number;
  /** Set while registration fails with InvalidArgument / Unauthenticated / PermissionDenied. */
  configError: string | null;
  lastError: { method: string; code: string; message: string; atMs: number } | null;
  lastSuccessMs: number | null;
  lastRegisteredMs: number | null;
  /** NodeStatus the control plane returned on the last ReportHealth ("NODE_STATUS_UNHEALTHY"). */
  nodeStatus: string | null;
  pending: number;
  eventsDelivered: number;
  reportsSent: number;
  heartbeatsSent: number;
  heartbeatIntervalMs: number;
  healthIntervalMs: number;
  commandPollIntervalMs: number;
  cordoned: boolean;
  draining: boolean;
  terminating: boolean;
  /** The termination marker found at start (the node was terminated before this process ran). */
  terminated: TerminationMarker | null;
  commandsHandled: number;
}

export interface AgentLinkOptions {
  client: ControlPlaneClient;
  store: EventStore;
  inventory: () => NodeInventory | Promise<NodeInventory>;
  metrics?: () => NodeMetricsSample | Promise<NodeMetricsSample>;
  /** Node-side check results for periodic reports (boot, nvml, xid, ...). */
  checks?: () => CheckResult[] | Promise<CheckResult[]>;
  /** Full diagnostic sweep for RUN_DIAGNOSTIC (parameters of the command). */
  diagnostics?: (parameters: Record<string, string>) => Promise<CheckResult[]>;
  logger?: Logger;
  /** Where the TERMINATE marker lives (none written when unset). */
  stateDir?: string;
  hooks?: {
    /** Executable run as `<drain> drain|terminate` on DRAIN and TERMINATE. */
    drain?: string;
    /** Executable run as `<cordon> cordon|uncordon` on CORDON and UNCORDON. */
    cordon?: string;
    /** Deadline of a hook (default 300000; a command's `timeout` parameter in seconds overrides, capped at 1 h). */
    timeoutMs?: number;
  };
  /** Called once after TERMINATE was handled and the link stopped: the owner exits with exitCode. */
  onTerminate?: (info: TerminateInfo) => void;
  /** Delivery latency (event timeMs -> acknowledged), per delivered event. */
  onDeliveryLatency?: (ms: number, event: HealthEvent) => void;
  /** Every RPC outcome (metrics). */
  onRpc?: (info: RpcInfo) => void;
  /**
   * Local intervals (heartbeat 30 s, health 60 s by default) used until the control plane sends
   * its own, and whenever it sends 0 / a negative value; command poll 10 s.
   */
  heartbeatIntervalMs?: number;
  healthIntervalMs?: number;
  commandPollIntervalMs?: number;
  retry?: {
    /** First backoff step (default 500 ms). */
    baseMs?: number;
    /** Backoff cap (default 30 s). */
    capMs?: number;
    /** Retry period after a configuration error (default 60 s). */
    configErrorMs?: number;
  };
  /**
   * Who judges the node (src/controlplane/node-state.ts): `agent` (default) adds the
   * `navarch_agent` result to every report; `policy` re-sends the active faults as events with
   * every report and leaves the verdict to the control plane's CEL policy.
   */
  verdict?: VerdictMode;
  /** Active faults re-sent per report in `policy` mode (default 64). */
  stateCap?: number;
  /** Events per ReportHealth (default 500). */
  maxEventsPerReport?: number;
  /** Deadline of each provider call (inventory, metrics, checks; default 5 s). */
  providerTimeoutMs?: number;
  /** Deadline of a RUN_DIAGNOSTIC sweep (default 10 min). */
  diagnosticTimeoutMs?: number;
  /** Randomness for jitter (tests). */
  random?: () => number;
}

const DEFAULT_HEARTBEAT_MS = 30_000;
const DEFAULT_HEALTH_MS = 60_000;
const DEFAULT_POLL_MS = 10_000;
const MIN_SERVER_INTERVAL_S = 1;
const MAX_SERVER_INTERVAL_S = 3600;
const MAX_EXTRA_RESULTS = 256;
const CONFIG_CODES = new Set([Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied]);

/**
 * Validates an interval (seconds) from the control plane: 0, negative, non-integer garbage ->
 * the default; otherwise clamped to [1 s, 1 h]. Returns milliseconds.
 */
export function validateServerInterval(seconds: number | undefined, defaultMs: number): { ms: number; adjusted: boolean } {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds <= 0) return { ms: defaultMs, adjusted: true };
  const clamped = Math.min(MAX_SERVER_INTERVAL_S, Math.max(MIN_SERVER_INTERVAL_S, seconds));
  return { ms: clamped * 1000, adjusted: clamped !== seconds };
}

/** Failures logged at warn: the 1st, 2nd, 4th, 8th, ... of a run (fast retries must not flood the log). */
function worthLogging(attempt: number): boolean {
  return (attempt & (attempt + 1)) === 0;
}

export function readTerminationMarker(stateDir: string): TerminationMarker | null {
  try {
    const m = JSON.parse(readBoundedTextSync(join(stateDir, TERMINATION_MARKER), FILE_LIMITS.state)) as TerminationMarker;
    return typeof m === 'object' && m !== null ? m : null;
  } catch {
    return null;
  }
}

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

function codeName(c: Code): string {
  return (Code[c] ?? 'unknown').replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
}

async function bounded<T>(p: T | Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve(p),
      new Promise<T>((_, reject) => {
        t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    if (t) clearTimeout(t);
  }
}

export class AgentLink {
  private readonly o: AgentLinkOptions;
  private readonly log: Logger;
  private readonly rnd: () => number;
  private readonly abort = new AbortController();
  private readonly retry: RetryPolicy;
  private readonly configErrorMs: number;
  private readonly maxBatch: number;
  private readonly providerTimeoutMs: number;
  private readonly verdict: VerdictMode;

  private started = false;
  private stopping = false;
  private stopped = false;
  private registered = false;
  private registering: Promise<void> | null = null;
  private generation = 0;
  private nodeId: string | null = null;
  private unsubscribe: (() => void) | null = null;
  private registeredWaiters: Array<() => void> = [];

  private hbTimer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private sleepers = new Set<() => void>();

  private pumpRunning = false;
  /** Ids whose store.ack() is in progress, and those acks. */
  private readonly acking = new Set<string>();
  private readonly acks = new Set<Promise<void>>();
  private dirty = false;
  private periodicDue = false;
  private needReassert = false;
  private extraResults: CheckResult[] = [];

  /** The configured intervals (used when the control plane sends 0 or nothing). */
  private readonly localHeartbeatMs: number;
  private readonly localHealthMs: number;
  private heartbeatMs: number;
  private healthMs: number;
  private pollMs: number;

  private readonly seenCommands = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  /** RUN_DIAGNOSTIC sweeps, chained so that they run one after another. */
  private diagChain: Promise<void> = Promise.resolve();
  private cordoned = false;
  private draining = false;
  private terminating = false;
  private terminated: TerminationMarker | null = null;

  private st = {
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

  constructor(opts: AgentLinkOptions) {
    this.o = opts;
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.rnd = opts.random ?? Math.random;
    this.retry = { baseMs: opts.retry?.baseMs ?? 500, capMs: opts.retry?.capMs ?? 30_000, random: this.rnd };
    this.configErrorMs = opts.retry?.configErrorMs ?? 60_000;
    this.maxBatch = Math.max(1, opts.maxEventsPerReport ?? 500);
    this.providerTimeoutMs = opts.providerTimeoutMs ?? 5000;
    this.verdict = opts.verdict ?? 'agent';
    const local = (v: number | undefined, d: number, name: string): number => {
      if (v === undefined) return d;
      if (!Number.isFinite(v) || v < 100 || v > 3_600_000) throw new Error(`${name} must be within [100 ms, 1 h], got ${v}`);
      return v;
    };
    this.heartbeatMs = local(opts.heartbeatIntervalMs, DEFAULT_HEARTBEAT_MS, 'heartbeatIntervalMs');
    this.healthMs = local(opts.healthIntervalMs, DEFAULT_HEALTH_MS, 'healthIntervalMs');
    this.pollMs = local(opts.commandPollIntervalMs, DEFAULT_POLL_MS, 'commandPollIntervalMs');
    this.localHeartbeatMs = this.heartbeatMs;
    this.localHealthMs = this.healthMs;
  }

  /** Starts registration (in the background) and the loops. Idempotent. */
  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.o.stateDir) {
      this.terminated = readTerminationMarker(this.o.stateDir);
      if (this.terminated) {
        this.log.error(
          { commandId: this.terminated.commandId, at: new Date(this.terminated.timeMs).toISOString() },
          `node was terminated by control-plane command; not registering. Remove ${join(this.o.stateDir, TERMINATION_MARKER)} to bring it back`,
        );
        return;
      }
    }
    this.unsubscribe = this.o.store.onPending(() => this.kickPump());
    this.ensureRegistered('start');
  }

  /** Resolves once registered (immediately when already registered). */
  whenRegistered(): Promise<void> {
    if (this.registered) return Promise.resolve();
    return new Promise((resolve) => this.registeredWaiters.push(resolve));
  }

  status(): LinkStatus {
    return {
      nodeId: this.nodeId,
      url: this.o.client.url.toString().replace(/\/$/, ''),
      registered: this.registered,
      registrations: this.st.registrations,
      configError: this.st.configError,
      lastError: this.st.lastError,
      lastSuccessMs: this.st.lastSuccessMs,
      lastRegisteredMs: this.st.lastRegisteredMs,
      nodeStatus: this.st.nodeStatus,
      pending: this.o.store.pendingCount(),
      eventsDelivered: this.st.eventsDelivered,
      reportsSent: this.st.reportsSent,
      heartbeatsSent: this.st.heartbeatsSent,
      heartbeatIntervalMs: this.heartbeatMs,
      healthIntervalMs: this.healthMs,
      commandPollIntervalMs: this.pollMs,
      cordoned: this.cordoned,
      draining: this.draining,
      terminating: this.terminating,
      terminated: this.terminated,
      commandsHandled: this.st.commandsHandled,
    };
  }

  /** Sends a report now (events plus current check results), e.g. after a state change. */
  reportNow(): void {
    this.periodicDue = true;
    this.kickPump();
  }

  /**
   * Stops the loops, flushes pending events and sends a final report within deadlineMs (default
   * 10 s), then cancels whatever is still in flight. Resolves when done; never rejects.
   */
  async stop(opts: { deadlineMs?: number } = {}): Promise<void> {
    await this.shutdown(opts.deadlineMs ?? 10_000, true);
  }

  // ---------------------------------------------------------------------------------------------
  // RPC plumbing

  private async call<T>(method: RpcInfo['method'], fn: (o: { signal: AbortSignal; timeoutMs: number }) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn({ signal: this.abort.signal, timeoutMs: this.o.client.timeoutMs });
      this.st.lastSuccessMs = Date.now();
      // The control plane answers: a retry waiting out its backoff goes now (held events are
      // delivered at once after an outage, not at the end of a backoff of up to 30 s).
      this.wakeSleepers();
      this.o.onRpc?.({ method, ok: true, code: null, durationMs: performance.now() - t0 });
      return r;
    } catch (e) {
      const ce = ConnectError.from(e);
      const code = codeName(ce.code);
      this.st.lastError = { method, code, message: truncateText(ce.rawMessage), atMs: Date.now() };
      this.o.onRpc?.({ method, ok: false, code, durationMs: performance.now() - t0 });
      throw ce;
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.sleepers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private wakeSleepers(): void {
    for (const s of [...this.sleepers]) s();
  }

  private clearTimers(): void {
    for (const t of [this.hbTimer, this.healthTimer, this.pollTimer]) if (t) clearTimeout(t);
    this.hbTimer = this.healthTimer = this.pollTimer = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Registration

  private ensureRegistered(reason: string): void {
    if (this.registering || this.stopping || this.stopped) return;
    this.registered = false;
    this.generation += 1;
    this.clearTimers();
    this.registering = this.registerLoop(reason).finally(() => {
      this.registering = null;
    });
  }

  private async registerLoop(reason: string): Promise<void> {
    let attempt = 0;
    while (!this.stopping && !this.abort.signal.aborted) {
      let delay: number;
      try {
        const inv = await bounded(this.o.inventory(), this.providerTimeoutMs, 'inventory provider');
        if (!inv.nodeId) throw new ConnectError('node id is empty (set --node-id or the hostname)', Code.InvalidArgument);
        const req = inventoryToRegisterRequest(inv);
        const res = await this.call('RegisterNode', (o) => this.o.client.rpc.registerNode(req, o));
        if (!res.success) throw new ConnectError(`registration rejected: ${truncateText(res.message)}`, Code.Unavailable);
        if (this.stopping) return;
        this.nodeId = inv.nodeId;
        const hb = validateServerInterval(res.config?.heartbeatIntervalSeconds, this.localHeartbeatMs);
        const hc = validateServerInterval(res.config?.healthCheckIntervalSeconds, this.localHealthMs);
        if (hb.adjusted || hc.adjusted) {
          this.log.warn(
            { heartbeatIntervalSeconds: res.config?.heartbeatIntervalSeconds, healthCheckIntervalSeconds: res.config?.healthCheckIntervalSeconds },
            `control plane sent out-of-range intervals; using heartbeat ${hb.ms} ms, health ${hc.ms} ms`,
          );
        }
        this.heartbeatMs = res.config ? hb.ms : this.heartbeatMs;
        this.healthMs = res.config ? hc.ms : this.healthMs;
        this.registered = true;
        this.st.registrations += 1;
        this.st.lastRegisteredMs = Date.now();
        if (this.st.configError) this.log.info('control-plane configuration error resolved');
        this.st.configError = null;
        const faults = this.o.store.activeFaults();
        this.log.info(
          { nodeId: inv.nodeId, gpus: inv.gpus.length, reason, registrations: this.st.registrations, activeFaults: faults.length },
          'registered with the control plane',
        );
        // Registration resets the node to ACTIVE: re-assert what is wrong at once.
        this.needReassert = true;
        this.periodicDue = true;
        this.startLoops();
        const waiters = this.registeredWaiters.splice(0);
        for (const w of waiters) w();
        return;
      } catch (e) {
        if (this.stopping) return;
        const ce = ConnectError.from(e);
        if (isConfigError(ce)) {
          const msg = `control-plane configuration error (${codeName(ce.code)}): ${truncateText(ce.rawMessage)}; retrying every ${Math.round(this.configErrorMs / 1000)} s`;
          this.st.configError = msg;
          this.log.error({ code: codeName(ce.code), url: this.o.client.url.origin }, msg);
          delay = jittered(this.configErrorMs, this.rnd);
        } else {
          const r = retryDelayMs(ce, attempt, this.retry);
          delay = r.ms;
          if (worthLogging(attempt)) this.log.warn({ code: codeName(ce.code), err: ce.rawMessage, refused: r.refused, retryInMs: delay, attempt: attempt + 1 }, 'registration failed');
        }
        attempt += 1;
      }
      await this.sleep(delay);
    }
  }

  /** A configuration error after registration (token rotated, CA changed): surface it loudly. */
  private noteConfigError(ce: ConnectError): void {
    if (!isConfigError(ce)) return;
    const msg = `control-plane configuration error (${codeName(ce.code)}): ${truncateText(ce.rawMessage)}`;
    if (this.st.configError !== msg) this.log.error({ code: codeName(ce.code) }, msg);
    this.st.configError = msg;
  }

  /** The control plane answered NotFound: it forgot the node. Re-register, then re-assert. */
  private forgotten(method: string): void {
    if (!this.registered) return;
    if (this.stopping) {
      // No re-registration while stopping: the final flush ends here (otherwise the shutdown loop
      // re-sends the report every few ms until its deadline); events stay in the store.
      this.registered = false;
      this.log.warn({ method }, 'control plane does not know this node (NotFound) while stopping: final report skipped');
      return;
    }
    this.log.warn({ method }, 'control plane does not know this node (NotFound): re-registering');
    this.ensureRegistered('not_found');
  }

  private startLoops(): void {
    this.clearTimers();
    const gen = this.generation;
    // First heartbeat right away, then on the (jittered) interval.
    const hb = async (): Promise<void> => {
      if (gen !== this.generation || this.stopping) return;
      await this.heartbeat();
      if (gen === this.generation && !this.stopping) this.hbTimer = setTimeout(hb, jittered(this.heartbeatMs, this.rnd));
    };
    this.hbTimer = setTimeout(hb, 0);
    const health = (): void => {
      if (gen !== this.generation || this.stopping) return;
      this.periodicDue = true;
      this.kickPump();
      this.healthTimer = setTimeout(health, jittered(this.healthMs, this.rnd));
    };
    this.healthTimer = setTimeout(health, jittered(this.healthMs, this.rnd));
    const poll = async (): Promise<void> => {
      if (gen !== this.generation || this.stopping) return;
      await this.pollCommands();
      if (gen === this.generation && !this.stopping) this.pollTimer = setTimeout(poll, jittered(this.pollMs, this.rnd));
    };
    this.pollTimer = setTimeout(poll, jittered(Math.min(this.pollMs, 1000), this.rnd));
    this.kickPump();
  }

  // ---------------------------------------------------------------------------------------------
  // Heartbeat

  private async heartbeat(): Promise<void> {
    if (!this.registered || !this.nodeId) return;
    let metrics;
    if (this.o.metrics) {
      try {
        metrics = metricsToProto(await bounded(this.o.metrics(), this.providerTimeoutMs, 'metrics provider'));
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'metrics unavailable; heartbeat without metrics');
      }
    }
    // No timestamp: the control plane's own clock decides liveness.
    const req = create(HeartbeatRequestSchema, { nodeId: this.nodeId, metrics });
    try {
      await this.call('SendHeartbeat', (o) => this.o.client.rpc.sendHeartbeat(req, o));
      this.st.heartbeatsSent += 1;
    } catch (e) {
      const ce = ConnectError.from(e);
      this.noteConfigError(ce);
      if (ce.code === Code.NotFound) this.forgotten('SendHeartbeat');
      else if (!this.abort.signal.aborted) this.log.warn({ code: codeName(ce.code), err: ce.rawMessage }, 'heartbeat failed');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Health delivery

  private kickPump(): void {
    this.dirty = true;
    if (this.pumpRunning || !this.registered || this.stopped || this.abort.signal.aborted) return;
    this.pumpRunning = true;
    void this.pump()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'health delivery loop failed'))
      .finally(() => {
        this.pumpRunning = false;
        if (this.dirty && this.registered && !this.abort.signal.aborted) this.kickPump();
      });
  }

  private async pump(): Promise<void> {
    let attempt = 0;
    while (this.registered && this.nodeId && !this.abort.signal.aborted) {
      this.dirty = false;
      const gen = this.generation;
      const wantPeriodic = this.periodicDue;
      const wantReassert = this.needReassert;
      this.periodicDue = false;
      this.needReassert = false;
      const extra = this.extraResults.splice(0);
      // Check results first: the events and the active faults below are then read at one moment.
      const results: CheckResult[] = [];
      if (wantPeriodic && this.o.checks) {
        try {
          results.push(...(await bounded(this.o.checks(), this.providerTimeoutMs, 'check provider')));
        } catch (e) {
          this.log.warn({ err: (e as Error).message }, 'check results unavailable for this report');
        }
      }
      // Events whose ack is still being written are not sent again meanwhile (pipelining).
      const batch =
        this.acking.size === 0
          ? this.o.store.pending(this.maxBatch)
          : this.o.store
              .pending(this.maxBatch + this.acking.size)
              .filter((e) => !this.acking.has(e.id))
              .slice(0, this.maxBatch);
      if (batch.length === 0 && !wantPeriodic && !wantReassert && extra.length === 0) {
        if (this.dirty) continue;
        return;
      }
      const events = [];
      // Every report states the whole current state (the server judges each one alone).
      const faults = this.o.store.activeFaults();
      const sentKeys = new Set(batch.map((e) => e.key));
      if (wantReassert) {
        const again = faults.filter((f) => !sentKeys.has(f.key));
        events.push(...again.map(faultToProto));
        for (const f of again) sentKeys.add(f.key);
        if (again.length > 0) this.log.warn({ faults: again.map((f) => f.key) }, 're-asserting active faults after registration');
      }
      const state = wholeState(this.verdict, faults, Date.now(), { cap: this.o.stateCap, skipKeys: sentKeys });
      if (state.omitted > 0 && worthLogging(this.st.reportsSent)) this.log.warn({ omitted: state.omitted, cap: this.o.stateCap }, 'more active faults than one report re-sends; the worst are sent');
      results.push(...state.results);
      events.push(...state.faults.map(faultToProto));
      results.push(...extra);
      events.push(...batch.map(eventToProtoSafe));
      const req = create(ReportHealthRequestSchema, { nodeId: this.nodeId, results: results.map(resultToProto), events });
      try {
        const res = await this.call('ReportHealth', (o) => this.o.client.rpc.reportHealth(req, o));
        if (!res.acknowledged) throw new ConnectError('report not acknowledged', Code.Unavailable);
        this.st.reportsSent += 1;
        this.st.configError = null;
        this.st.nodeStatus = `NODE_STATUS_${NodeStatus[res.nodeStatus] ?? 'UNKNOWN'}`;
        attempt = 0;
        if (batch.length > 0) {
          // The ack (an fsync in the durable store) runs while the next batch is sent; the
          // events stay excluded until it is written, and come back if it fails.
          for (const e of batch) this.acking.add(e.id);
          const ack = this.o.store
            .ack(batch.map((e) => ({ id: e.id, count: e.count })))
            .catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'store ack failed; the events stay on disk and are sent again after a restart (at-least-once)'))
            .finally(() => {
              for (const e of batch) this.acking.delete(e.id);
              this.acks.delete(ack);
              if (this.o.store.pendingCount() > this.acking.size) this.kickPump();
            });
          this.acks.add(ack);
          const now = Date.now();
          this.st.eventsDelivered += batch.length;
          if (this.o.onDeliveryLatency) for (const ev of batch) this.o.onDeliveryLatency(Math.max(0, now - ev.timeMs), ev);
        }
      } catch (e) {
        // Nothing is dropped: flags and extra results go back, events stay in the store.
        if (wantPeriodic) this.periodicDue = true;
        if (wantReassert) this.needReassert = true;
        this.extraResults.unshift(...extra);
        const ce = ConnectError.from(e);
        if (this.abort.signal.aborted) return;
        this.noteConfigError(ce);
        if (ce.code === Code.NotFound) {
          if (gen === this.generation) this.forgotten('ReportHealth');
          return;
        }
        const r = retryDelayMs(ce, attempt, this.retry);
        const delay = this.stopping ? Math.min(200, r.ms) : r.ms;
        if (worthLogging(attempt)) {
          this.log.warn(
            { code: codeName(ce.code), err: ce.rawMessage, refused: r.refused, pending: this.o.store.pendingCount(), retryInMs: delay, attempt: attempt + 1 },
            'health report failed; will retry (any call that succeeds meanwhile retries at once)',
          );
        }
        attempt += 1;
        await this.sleep(delay);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Commands

  private async pollCommands(): Promise<void> {
    if (!this.registered || !this.nodeId || this.terminating) return;
    const req = create(GetNodeCommandsRequestSchema, { nodeId: this.nodeId });
    let commands: NodeCommand[];
    try {
      commands = (await this.call('GetNodeCommands', (o) => this.o.client.rpc.getNodeCommands(req, o))).commands;
    } catch (e) {
      if (!this.abort.signal.aborted) this.log.warn({ code: codeName((e as ConnectError).code), err: (e as ConnectError).rawMessage }, 'command poll failed');
      return;
    }
    for (const c of commands) {
      if (this.seenCommands.has(c.commandId)) continue;
      this.seenCommands.add(c.commandId);
      if (this.seenCommands.size > 1000) this.seenCommands.delete(this.seenCommands.values().next().value as string);
      const p = this.handleCommand(c)
        .catch((e) => this.log.error({ commandId: c.commandId, err: (e as Error).message }, 'command failed'))
        .finally(() => this.running.delete(p));
      this.running.add(p);
    }
  }

  private hookTimeout(params: Record<string, string>): number {
    const base = this.o.hooks?.timeoutMs ?? 300_000;
    const s = Number(params.timeout);
    return Number.isFinite(s) && s > 0 ? Math.min(3_600_000, s * 1000) : base;
  }

  private async hook(kind: 'drain' | 'cordon', arg: string, c: NodeCommand): Promise<HookResult | null> {
    const path = this.o.hooks?.[kind];
    if (!path) return null;
    const env: Record<string, string> = {
      NAVARCH_COMMAND_ID: c.commandId,
      NAVARCH_COMMAND_TYPE: NodeCommandType[c.type] ?? 'UNKNOWN',
      NAVARCH_NODE_ID: this.nodeId ?? '',
    };
    for (const [k, v] of Object.entries(c.parameters)) {
      const name = k.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
      if (name) env[`NAVARCH_PARAM_${name}`] = v;
    }
    const r = await runHook(path, [arg], env, this.hookTimeout(c.parameters));
    const level = r.ok ? 'info' : 'error';
    this.log[level](
      { hook: path, arg, exitCode: r.exitCode, signal: r.signal, timedOut: r.timedOut, error: r.error, durationMs: r.durationMs, output: r.output.slice(-1024) },
      r.ok ? `${kind} hook succeeded` : `${kind} hook failed`,
    );
    return r;
  }

  private async handleCommand(c: NodeCommand): Promise<void> {
    const type = NodeCommandType[c.type] ?? `UNKNOWN(${c.type})`;
    this.log.info({ commandId: c.commandId, type, parameters: c.parameters }, 'control-plane command received');
    this.st.commandsHandled += 1;
    switch (c.type) {
      case NodeCommandType.CORDON:
        if (c.parameters.uncordon === 'true') {
          this.cordoned = false;
          await this.hook('cordon', 'uncordon', c);
        } else {
          this.cordoned = true;
          await this.hook('cordon', 'cordon', c);
        }
        return;
      case NodeCommandType.UNCORDON:
        this.cordoned = false;
        this.draining = false;
        await this.hook('cordon', 'uncordon', c);
        return;
      case NodeCommandType.DRAIN:
        this.cordoned = true;
        this.draining = true;
        await this.hook('drain', 'drain', c);
        return;
      case NodeCommandType.RUN_DIAGNOSTIC: {
        // One sweep at a time: N commands in one poll must not run N sweeps against the GPUs at once.
        const run = this.diagChain.then(() => this.diagnostic(c));
        this.diagChain = run.catch(() => undefined);
        await run;
        return;
      }
      case NodeCommandType.TERMINATE:
        await this.terminate(c);
        return;
      default:
        this.log.warn({ commandId: c.commandId, type }, 'unknown command type; skipped');
    }
  }

  private async diagnostic(c: NodeCommand): Promise<void> {
    let results: CheckResult[];
    if (!this.o.diagnostics) {
      results = [{ name: 'diagnostic', status: 'unknown', message: 'no diagnostic provider configured', details: { command_id: c.commandId } }];
    } else {
      try {
        results = await bounded(this.o.diagnostics({ ...c.parameters }), this.o.diagnosticTimeoutMs ?? 600_000, 'diagnostic sweep');
      } catch (e) {
        results = [{ name: 'diagnostic', status: 'unknown', message: `diagnostic failed: ${(e as Error).message}`, details: { command_id: c.commandId } }];
      }
    }
    this.log.info({ commandId: c.commandId, results: results.map((r) => `${r.name}=${r.status}`) }, 'diagnostic results');
    this.pushExtraResults(results.map((r) => ({ ...r, details: { ...(r.details ?? {}), command_id: c.commandId } })));
    this.kickPump();
  }

  /** Results waiting for the next report, bounded (oldest dropped, with a warning). */
  private pushExtraResults(results: CheckResult[]): void {
    this.extraResults.push(...results);
    const over = this.extraResults.length - MAX_EXTRA_RESULTS;
    if (over > 0) {
      this.extraResults.splice(0, over);
      this.log.warn({ dropped: over }, 'too many undelivered diagnostic results; dropped the oldest');
    }
  }

  private async terminate(c: NodeCommand): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    this.cordoned = true;
    this.draining = true;
    if (c.parameters.exit === 'false') {
      // Navarch's `exit=false`: prepare for termination (cordon, drain) but keep running.
      this.log.warn({ commandId: c.commandId, parameters: c.parameters }, 'TERMINATE with exit=false: draining, staying up');
      await this.hook('drain', 'terminate', c);
      this.pushExtraResults([{ name: 'agent', status: 'unknown', message: `drained for termination on command ${c.commandId} (exit=false)`, details: { command_id: c.commandId } }]);
      this.terminating = false;
      this.kickPump();
      return;
    }
    this.log.warn({ commandId: c.commandId, parameters: c.parameters }, 'TERMINATE: draining, final report, then exit');
    await this.hook('drain', 'terminate', c);
    let markerPath: string | null = null;
    if (this.o.stateDir) {
      markerPath = join(this.o.stateDir, TERMINATION_MARKER);
      const marker: TerminationMarker = { commandId: c.commandId, nodeId: this.nodeId ?? '', timeMs: Date.now(), reason: 'TERMINATE command' };
      try {
        mkdirSync(this.o.stateDir, { recursive: true });
        writeFileSync(markerPath + '.tmp', JSON.stringify(marker) + '\n', { mode: 0o644 });
        renameSync(markerPath + '.tmp', markerPath);
      } catch (e) {
        this.log.error({ err: (e as Error).message, markerPath }, 'cannot write the termination marker');
        markerPath = null;
      }
    }
    this.pushExtraResults([{ name: 'agent', status: 'unknown', message: `terminating on command ${c.commandId}`, details: { command_id: c.commandId } }]);
    // When stop() is already under way it waits for this command and finishes the shutdown itself;
    // waiting here for it to finish would only run out its deadline.
    if (!this.stopping) await this.shutdown(Math.min(30_000, this.hookTimeout(c.parameters)), false);
    this.o.onTerminate?.({ exitCode: TERMINATE_EXIT_CODE, commandId: c.commandId, markerPath, parameters: { ...c.parameters } });
  }

  // ---------------------------------------------------------------------------------------------
  // Shutdown

  private async shutdown(deadlineMs: number, waitCommands: boolean): Promise<void> {
    if (this.stopping) {
      while (!this.stopped) await new Promise((r) => setTimeout(r, 20));
      return;
    }
    this.stopping = true;
    const deadline = Date.now() + Math.max(0, deadlineMs);
    this.clearTimers();
    this.wakeSleepers();
    if (this.registered) {
      // Flush events and send the final report (with current check results) through the pump.
      this.periodicDue = true;
      this.kickPump();
      while (
        Date.now() < deadline &&
        this.registered &&
        (this.pumpRunning || this.periodicDue || this.acks.size > 0 || this.o.store.pendingCount() > 0)
      ) {
        if (!this.pumpRunning) this.kickPump();
        await new Promise((r) => setTimeout(r, 10));
      }
      if (this.acks.size > 0) {
        const rest = Math.max(50, deadline - Date.now());
        await Promise.race([Promise.allSettled([...this.acks]), new Promise((r) => setTimeout(r, rest))]);
      }
      const left = this.o.store.pendingCount();
      if (left > 0) this.log.warn({ pending: left }, 'stopping with events not yet acknowledged (kept in the store)');
    }
    if (waitCommands && this.running.size > 0) {
      const rest = Math.max(0, deadline - Date.now());
      await Promise.race([Promise.allSettled([...this.running]), new Promise((r) => setTimeout(r, rest))]);
    }
    this.abort.abort();
    this.wakeSleepers();
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.registered = false;
    this.stopped = true;
    this.o.client.close();
    this.log.info('control-plane link stopped');
  }
}
