/**
 * The daemon: composes the GPU backend, the event sources (NVML events, kernel log, telemetry),
 * the durable event store, the control-plane link, the local API and systemd notifications.
 *
 *   backend.watch ──> nvml-events ─┐
 *   kmsg (PCI id -> GPU) ──────────┼──> store.append (durable, coalesced) ──> control-plane link
 *   telemetry sampler + judge ─────┘                 └──> metrics, /status
 *
 * Faults are detected and stored whether or not the control plane is reachable; the link sends
 * what is pending when it can. Nothing here blocks on the network.
 */
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AgentMetrics } from '../api/metrics.js';
import { startApiServer } from '../api/server.js';
import { ApiListener } from '../api/listener.js';
import type { AgentStatus, AgentView, ControlPlaneStatus, DeviceStatus, KmsgStatus } from '../api/types.js';
import { selectBackend, type SelectResult } from '../backends/select.js';
import { isInjectable, type FakeFault, type GpuBackend } from '../backends/types.js';
import type { AgentConfig } from '../config/config.js';
import type { HealthEventInput } from '../events/types.js';
import { applyFaultOverrides, SuppressionCounts } from '../events/overrides.js';
import { operatorClearInput, selectFaults, type ClearSelector } from '../events/operator-clear.js';
import { faultOverridesJson } from '../config/fault-overrides.js';
import type { DeviceInfo, DeviceSnapshot, NvmlEvent, WatchStats } from '../nvml/types.js';
import { normalizePciBusId } from '../sources/kmsg-parse.js';
import { nvmlEventsToInputs } from '../sources/nvml-events.js';
import { TelemetrySampler } from '../sources/telemetry.js';
import { FabricManagerMonitor } from '../sources/fabric-manager.js';
import { bootTimeMs } from '../host/boot-time.js';
import { openEventStore, type DurableEventStore } from '../store/event-store.js';
import { MemoryEventStore } from '../store/memory-store.js';
import { chooseStateDir, volatileStateText } from './state-dir.js';
import { FaultHistory } from './fault-history.js';
import { BOOT_ID_PATH, readBootId } from '../host/boot-id.js';
import { judgedByRowRemapCounters } from '../xid/row-remap.js';
import type { AppendResult } from '../store/types.js';
import { KmsgLink } from './kmsg-link.js';
import { AgentLink, type LinkStatus, type TerminateInfo } from '../controlplane/agent-link.js';
import { createControlPlaneClient, type ControlPlaneClient } from '../controlplane/client.js';
import { insecureTransportWarning } from '../controlplane/url-policy.js';
import type { CheckResult, NodeInventory, NodeMetricsSample } from '../controlplane/model.js';
import { instanceTypeGpus } from '../host/instance-types.js';
import { CpuUsage, memoryUsagePercent, nodeFacts } from '../host/facts.js';
import { createDiagnostics } from './diagnostics.js';

export class AgentStartError extends Error {
  override name = 'AgentStartError';
  /** True for bad configuration (exit code 2), false for a host problem (exit code 1). */
  constructor(
    message: string,
    readonly usage = false,
  ) {
    super(message);
  }
}

function linkState(s: LinkStatus): ControlPlaneStatus {
  let state: ControlPlaneStatus['state'];
  if (s.configError && /unauthenticated|permission/i.test(s.lastError?.code ?? '')) state = 'unauthorized';
  else if (s.registered && s.lastSuccessMs !== null && (s.lastError === null || s.lastError.atMs <= s.lastSuccessMs)) state = 'connected';
  else if (!s.registered && s.lastError === null) state = 'connecting';
  else state = 'disconnected';
  return {
    server: s.url,
    state,
    registered: s.registered,
    nodeStatus: s.nodeStatus,
    lastError: s.configError ?? (s.lastError ? `${s.lastError.method}: ${s.lastError.code}: ${s.lastError.message}` : null),
    lastContactMs: s.lastSuccessMs,
  };
}

export interface AgentOptions {
  config: AgentConfig;
  log: Logger;
  version: string;
  env?: NodeJS.ProcessEnv;
  /** Called when the agent changes state (for systemd STATUS=). */
  onStatusText?: (text: string) => void;
  /** Override of os.hostname() (tests). */
  hostname?: string;
  /** The control plane ordered TERMINATE: the owner should exit with this code. */
  onTerminate?: (info: TerminateInfo) => void;
}

/** Liveness: the main loop must have ticked within this long. */
const LIVENESS_MS = 15_000;
const TICK_MS = 1_000;

export class Agent implements AgentView {
  readonly startedAtMs = Date.now();
  readonly metrics: AgentMetrics;
  private api: ApiListener | null = null;
  private store: DurableEventStore | null = null;
  private backend: GpuBackend | null = null;
  private selection: SelectResult | null = null;
  private watch: { stop(): Promise<void>; stats(): WatchStats } | null = null;
  private telemetry: TelemetrySampler | null = null;
  private kmsg: KmsgLink | null = null;
  private fabricManager: FabricManagerMonitor | null = null;
  private link: AgentLink | null = null;
  private client: ControlPlaneClient | null = null;
  private readonly cpu = new CpuUsage();
  private tickTimer: NodeJS.Timeout | null = null;
  private lastTickMs = Date.now();
  private stopping: Promise<void> | null = null;
  private readonly devices = new Map<number, DeviceStatus>();
  private readonly byPci = new Map<string, DeviceInfo>();
  private readonly ingestQueue = new Set<Promise<void>>();
  private readonly log: Logger;
  private readonly cfg: AgentConfig;
  private readonly hostname: string;
  private appendFailures = 0;
  /** Events the config's suppressions held back (src/events/overrides.ts). */
  private readonly suppressed = new SuppressionCounts();
  /** Plain http:// to a non-loopback control plane: said once at start and in /status. */
  private transportWarning: string | null = null;
  /** The state directory in use; null = none writable, events in memory only (see state-dir.ts). */
  private stateDir: string | null = null;
  /** Why no state directory is used (null when one is). */
  private volatileReason: string | null = null;
  /** This boot's id, read once (NAVARCH_BOOT_ID_PATH in tests). */
  private bootId = 'unknown';
  /** GPU/code pairs whose XID 63/64 was not raised, already logged once. */
  private readonly rowRemapNoted = new Set<string>();
  /** Faults across reboots: escalates an XID a reboot does not cure (src/agent/fault-history.ts). */
  private faultHistory: FaultHistory | null = null;

  private constructor(private readonly opts: AgentOptions) {
    this.cfg = opts.config;
    this.log = opts.log;
    this.hostname = opts.hostname ?? osHostname();
    this.metrics = new AgentMetrics({ view: this, hostname: this.hostname, version: opts.version });
  }

  /** Open everything in order; on failure, close what was opened and throw AgentStartError. */
  static async start(opts: AgentOptions): Promise<Agent> {
    const agent = new Agent(opts);
    try {
      await agent.open();
    } catch (err) {
      await agent.stop('start failed').catch(() => undefined);
      throw err instanceof AgentStartError ? err : new AgentStartError((err as Error).message);
    }
    return agent;
  }

  get apiUrl(): string | null {
    return this.api?.url ?? null;
  }

  private async open(): Promise<void> {
    const { cfg, log } = this;
    const env = this.opts.env ?? process.env;

    // Validate the control-plane settings before opening anything.
    try {
      this.client = createControlPlaneClient({
        url: cfg.server,
        ...(cfg.authToken ? { token: cfg.authToken } : {}),
        httpVersion: cfg.httpVersion,
        ...(cfg.caFile ? { caFile: cfg.caFile } : {}),
        ...(cfg.clientCert ? { certFile: cfg.clientCert } : {}),
        ...(cfg.clientKey ? { keyFile: cfg.clientKey } : {}),
        requireTls: cfg.requireTls,
      });
    } catch (err) {
      throw new AgentStartError(`control plane: ${(err as Error).message}`, true);
    }
    this.transportWarning = insecureTransportWarning(this.client.url, cfg.authToken !== null);
    if (this.transportWarning) log.warn({ component: 'controlplane', server: cfg.server }, `INSECURE TRANSPORT: ${this.transportWarning}`);

    const sd = await chooseStateDir(cfg.stateDir, env);
    this.stateDir = sd.dir;
    if (sd.dir === null) {
      this.volatileReason = volatileStateText(sd.problem ?? cfg.stateDir);
      log.warn({ component: 'store', stateDir: cfg.stateDir }, `NOT DURABLE: ${this.volatileReason}`);
    } else if (sd.problem !== null) {
      log.warn({ component: 'store', stateDir: sd.dir }, `state directory ${sd.dir} used instead (${sd.problem})`);
    }

    this.bootId = readBootId(cfg.bootIdPath ?? BOOT_ID_PATH);
    this.faultHistory = new FaultHistory({ stateDir: this.stateDir, bootId: this.bootId, log: log.child({ component: 'fault-history' }) });

    // 1. GPU backend
    const blog = log.child({ component: 'backend' });
    try {
      this.selection = await selectBackend({
        mode: cfg.gpuBackend,
        env,
        ...(cfg.instanceType ? { instanceType: cfg.instanceType } : {}),
        ...(cfg.scenario ? { scenarioFile: cfg.scenario } : {}),
        ...(cfg.sysRoot ? { sysRoot: cfg.sysRoot } : {}),
      });
    } catch (err) {
      throw new AgentStartError(`GPU backend: ${(err as Error).message}`);
    }
    const backend = this.selection.backend;
    this.backend = backend;
    for (const w of this.selection.warnings) blog.warn(w);
    blog.info({ kind: backend.kind, reason: backend.reason, system: backend.system(), gpus: backend.devices().length }, 'GPU backend open');
    this.setInventory(backend.devices());

    // 2. Durable store
    if (this.stateDir === null) {
      this.store = new MemoryEventStore();
    } else {
      try {
        this.store = await openEventStore({ dir: join(this.stateDir, 'events'), logger: log.child({ component: 'store' }), bootId: this.bootId });
      } catch (err) {
        throw new AgentStartError(`event store in ${this.stateDir}: ${(err as Error).message}`);
      }
    }
    this.store.onAppend((r) => this.onAppended(r));
    if (this.selection.driverError) void this.ingest(this.selection.driverError);

    // 3. Local API (before the sources: /healthz answers while they start). A port that cannot
    // be bound (another program holds it) is never fatal: ApiListener retries with backoff while
    // the agent detects, stores and delivers.
    const alog = log.child({ component: 'api' });
    this.api = new ApiListener({
      host: cfg.listen.host,
      port: cfg.listen.port,
      listen: () => startApiServer({ host: cfg.listen.host, port: cfg.listen.port, view: this, metrics: this.metrics, log: alog }),
      log: alog,
      logFields: { inject: this.inject !== undefined },
      onListening: (server) => {
        if (!cfg.listen.loopback) log.warn({ listen: server.url }, 'local API listens on a non-loopback address (explicitly configured)');
      },
    });
    await this.api.start();

    // 4. Sources
    this.watch = backend.watch((events) => this.onNvmlEvents(events));
    const tlog = log.child({ component: 'telemetry' });
    let sampleFailures = 0;
    const bootMs = bootTimeMs();
    this.telemetry = new TelemetrySampler({
      backend,
      config: {
        intervalMs: cfg.telemetryIntervalMs,
        fabricBootGraceMs: cfg.fabricBootGraceMs,
        bootTimeMs: bootMs,
        expectedGpuCount: backend.kind === 'nvml' ? (instanceTypeGpus(cfg.instanceType)?.gpus ?? null) : null,
      },
      onSnapshot: (snaps) => {
        sampleFailures = 0;
        this.onSnapshots(snaps);
      },
      onEvents: (inputs) => {
        for (const i of inputs) void this.ingest(i);
      },
      onError: (err) => {
        sampleFailures++;
        if (sampleFailures === 1 || sampleFailures % 60 === 0) tlog.warn({ err, failures: sampleFailures }, 'telemetry sample failed');
      },
    });
    await this.telemetry.start();
    this.kmsg = new KmsgLink({
      path: cfg.kmsgPath,
      reader: cfg.kmsgReader,
      stateDir: this.stateDir,
      bootId: this.bootId,
      log: log.child({ component: 'kmsg' }),
      resolvePci: (short) => this.byPci.get(short) ?? null,
      onEvent: (i) => this.ingest(i),
    });
    await this.kmsg.start();
    // NVSwitch hosts: nvidia-fabricmanager service and log, checked at the telemetry interval.
    const flog = log.child({ component: 'fabric-manager' });
    this.fabricManager = new FabricManagerMonitor({
      ...(cfg.sysRoot ? { sysRoot: cfg.sysRoot } : {}),
      logPath: cfg.fabricManagerLog,
      intervalMs: cfg.telemetryIntervalMs,
      config: { bootGraceMs: cfg.fabricBootGraceMs },
      bootTimeMs: bootMs,
      onEvents: (inputs) => {
        for (const i of inputs) void this.ingest(i);
      },
      onError: (err) => flog.warn({ err }, 'fabric manager check failed'),
    });
    await this.fabricManager.start();
    const fm = this.fabricManager.status();
    if (fm.state === 'running') flog.info({ nvswitch: fm.nvswitch, service: fm.service, logPath: fm.logPath }, 'NVSwitch host: watching nvidia-fabricmanager');

    // 5. Control plane (in the background: never blocks detection)
    this.link = new AgentLink({
      client: this.client,
      store: this.store,
      logger: log.child({ component: 'controlplane' }),
      ...(this.stateDir !== null ? { stateDir: this.stateDir } : {}),
      inventory: () => this.inventory(),
      metrics: () => this.nodeMetrics(),
      checks: () => this.checks(),
      // RUN_DIAGNOSTIC: a full sweep (src/agent/diagnostics.ts) against the registered inventory.
      diagnostics: createDiagnostics({
        backend,
        previousDevices: () => [...this.devices.values()],
        expectedGpuCount: backend.kind === 'nvml' ? (instanceTypeGpus(cfg.instanceType)?.gpus ?? null) : null,
        activeFaults: () => this.store?.activeFaults() ?? [],
        driverError: this.selection.driverError?.message ?? null,
      }),
      hooks: {
        ...(cfg.drainHook ? { drain: cfg.drainHook } : {}),
        ...(cfg.cordonHook ? { cordon: cfg.cordonHook } : {}),
      },
      heartbeatIntervalMs: cfg.heartbeatIntervalMs,
      healthIntervalMs: cfg.healthCheckIntervalMs,
      commandPollIntervalMs: cfg.commandPollIntervalMs,
      verdict: cfg.verdict,
      onDeliveryLatency: (ms) => this.metrics.observeDelivery(ms / 1000),
      onTerminate: (info) => this.opts.onTerminate?.(info),
    });
    this.link.start();

    // 6. Main loop tick (liveness)
    this.tickTimer = setInterval(() => {
      this.lastTickMs = Date.now();
    }, TICK_MS);
    this.tickTimer.unref();
  }

  private setInventory(devs: DeviceInfo[]): void {
    this.byPci.clear();
    for (const d of devs) {
      const prev = this.devices.get(d.index);
      this.devices.set(d.index, {
        ...d,
        telemetry: prev?.telemetry ?? null,
        sampleError: prev?.sampleError ?? null,
        sampledAtMs: prev?.sampledAtMs ?? null,
        lastXid: prev?.lastXid ?? 0,
      });
      const short = normalizePciBusId(d.pciBusId) ?? normalizePciBusId(d.pciBusIdShort);
      if (short) this.byPci.set(short, d);
    }
  }

  private onSnapshots(snaps: DeviceSnapshot[]): void {
    for (const s of snaps) {
      const d = this.devices.get(s.index);
      if (!d) continue;
      d.sampledAtMs = s.takenAtMs;
      if (s.ok) {
        d.telemetry = s.telemetry;
        d.sampleError = null;
      } else {
        // A failed sample (a lost or hung GPU) leaves no telemetry: the last good reading would
        // read as current next to the error.
        d.telemetry = null;
        d.sampleError = s.error;
      }
    }
  }

  private onNvmlEvents(events: NvmlEvent[]): void {
    const source = this.backend?.kind === 'fake' ? 'fake' : 'nvml';
    let inputs: HealthEventInput[];
    try {
      inputs = nvmlEventsToInputs(events, { source });
    } catch (err) {
      this.log.error({ err, component: 'nvml-events' }, 'cannot classify NVML events');
      return;
    }
    for (const i of inputs) void this.ingest(i);
  }

  /**
   * Append a classified event to the durable store (never rejects; failures are logged). Every
   * source's events come through here, so this is where XID 63/64 on a GPU with row-remapping
   * counters is dropped (src/xid/row-remap.ts), the operator's overrides and suppressions
   * apply (src/events/overrides.ts), and then reboot-aware escalation, on the overridden event
   * (src/agent/fault-history.ts): a suppressed event is not counted, an action made reset_gpu is.
   */
  ingest(raw: HealthEventInput): Promise<void> {
    const store = this.store;
    if (!store) return Promise.resolve();
    if (judgedByRowRemapCounters(raw, this.devices.get(raw.gpuIndex)?.telemetry)) {
      this.onRowRemapXid(raw);
      return Promise.resolve();
    }
    const o = applyFaultOverrides(raw, this.cfg.faultOverrides, (key) => store.activeFaults().some((f) => f.key === key));
    if (o.suppressed) {
      this.suppressed.record(o.rule, raw);
      this.log.debug({ component: 'events', key: raw.key, rule: o.rule.rule }, 'event suppressed by the config');
      return Promise.resolve();
    }
    const input = this.faultHistory ? this.faultHistory.observe(o.input) : o.input;
    const p = store
      .append(input)
      .then(() => this.countXid(input))
      .catch((err: unknown) => {
        this.appendFailures++;
        this.log.error({ err, key: input.key, severity: input.severity, component: 'store' }, 'cannot store health event');
      })
      .finally(() => this.ingestQueue.delete(p));
    this.ingestQueue.add(p);
    return p;
  }

  /**
   * XID 63/64 on a GPU whose counters report row remapping raises nothing (src/xid/row-remap.ts):
   * it is still counted (navarch_agent_xid_total), and said once per GPU and code.
   */
  private onRowRemapXid(input: HealthEventInput): void {
    this.countXid(input);
    const k = `${input.gpuIndex}/${input.metrics.xid_code}`;
    if (this.rowRemapNoted.has(k) || this.rowRemapNoted.size >= 256) return;
    this.rowRemapNoted.add(k);
    this.log.info(
      { component: 'events', key: input.key, gpu: input.gpuIndex, source: input.source },
      `XID ${input.metrics.xid_code} on GPU ${input.gpuIndex} raises no fault: the GPU reports row remapping through its counters, which the remapped-rows check judges (as gpud)`,
    );
  }

  private onAppended(r: AppendResult): void {
    const ev = r.event;
    if (ev.type === 'xid') {
      const code = Number(ev.metrics.xid_code);
      const d = this.devices.get(ev.gpuIndex);
      if (d && Number.isSafeInteger(code)) d.lastXid = code;
    }
    // A new event is logged at info; coalesced repeats (storms) only at debug, so a storm
    // cannot flood the journal.
    this.log[r.coalesced ? 'debug' : 'info'](
      {
        component: 'events',
        id: ev.id,
        key: ev.key,
        type: ev.type,
        gpu: ev.gpuIndex,
        severity: ev.severity,
        action: ev.action,
        count: ev.count,
        source: ev.source,
        coalesced: r.coalesced,
      },
      ev.message,
    );
  }

  /**
   * navarch_agent_xid_total counts occurrences as the sources report them (an NVML event merged
   * from a storm counts its full count). NVML is the primary XID source: a kernel-log XID is only
   * counted for a GPU whose NVML watcher does not report XIDs, so one XID seen by both sources
   * counts once.
   */
  private countXid(input: HealthEventInput): void {
    if (input.type !== 'xid') return;
    const code = Number(input.metrics.xid_code);
    if (!Number.isSafeInteger(code)) return;
    if (input.source === 'kmsg' && this.nvmlReportsXid(input.gpuIndex)) return;
    this.metrics.recordXid(input.gpuIndex, code, input.count ?? 1);
  }

  private nvmlReportsXid(gpuIndex: number): boolean {
    const reg = this.watch?.stats().registered.find((r) => r.deviceIndex === gpuIndex);
    return reg !== undefined && reg.error === null && reg.types.includes('xid');
  }

  private inventory(): NodeInventory {
    const cfg = this.cfg;
    const facts = nodeFacts({ hostname: this.hostname });
    const sys = this.backend?.system();
    return {
      nodeId: cfg.nodeId,
      provider: cfg.provider,
      region: cfg.region,
      zone: cfg.zone,
      instanceType: cfg.instanceType,
      pool: cfg.pool,
      labels: { ...cfg.labels },
      hostname: facts.hostname || cfg.nodeId,
      internalIp: facts.internalIp,
      externalIp: facts.externalIp,
      kernelVersion: facts.kernelVersion,
      gpus: [...this.devices.values()]
        .sort((a, b) => a.index - b.index)
        .map((d) => ({
          index: d.index,
          uuid: d.uuid,
          name: d.name,
          pciBusId: d.pciBusId,
          memoryTotalBytes: d.memoryTotalBytes,
          driverVersion: sys?.driverVersion ?? '',
          cudaVersion: sys?.cudaDriverVersion ?? '',
        })),
    };
  }

  private async nodeMetrics(): Promise<NodeMetricsSample> {
    const [cpu, mem] = await Promise.all([this.cpu.percent().catch(() => 0), memoryUsagePercent().catch(() => 0)]);
    return {
      cpuUsagePercent: cpu,
      memoryUsagePercent: mem,
      gpus: [...this.devices.values()]
        .filter((d) => d.telemetry !== null && d.sampleError === null)
        .map((d) => ({
          index: d.index,
          temperatureC: d.telemetry?.temperatureC ?? null,
          powerW: d.telemetry?.powerUsageW ?? null,
          utilizationPercent: d.telemetry?.gpuUtilPercent ?? null,
          memoryUsedBytes: d.telemetry?.memoryUsedBytes ?? null,
        })),
    };
  }

  /** Node-side check results for the periodic report (Go node's "boot" and "gpu" checks). */
  private checks(): CheckResult[] {
    const b = this.backend;
    const out: CheckResult[] = [];
    const n = this.devices.size;
    if (!b || b.kind === 'none') {
      out.push({ name: 'boot', status: 'unhealthy', message: this.selection?.driverError?.message ?? 'no GPU backend' });
    } else {
      out.push({ name: 'boot', status: n > 0 ? 'healthy' : 'unhealthy', message: `${n} GPU(s) via ${b.kind}` });
    }
    const failing = [...this.devices.values()].filter((d) => d.error || d.sampleError);
    const lost = failing.filter((d) => (d.error ?? d.sampleError)?.code === 'NVML_ERROR_GPU_IS_LOST');
    out.push({
      name: 'gpu',
      status: lost.length ? 'unhealthy' : failing.length ? 'degraded' : 'healthy',
      message: failing.length ? failing.map((d) => `GPU ${d.index}: ${(d.error ?? d.sampleError)?.code}`).join(', ') : `${n} GPU(s) answering`,
    });
    if (this.volatileReason !== null) out.push({ name: 'durability', status: 'degraded', message: this.volatileReason });
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // AgentView

  alive(): boolean {
    return this.stopping === null && Date.now() - this.lastTickMs < LIVENESS_MS;
  }

  status(): AgentStatus {
    const b = this.backend;
    const cp: ControlPlaneStatus = this.link
      ? linkState(this.link.status())
      : {
          server: this.cfg.server,
          state: 'connecting',
          registered: false,
          nodeStatus: null,
          lastError: null,
          lastContactMs: null,
        };
    const kmsg: KmsgStatus = this.kmsg?.status() ?? { enabled: this.cfg.kmsgPath !== null, path: this.cfg.kmsgPath, state: 'starting' };
    return {
      agent: {
        version: this.opts.version,
        nodeId: this.cfg.nodeId,
        pid: process.pid,
        startedAtMs: this.startedAtMs,
        uptimeS: Math.round((Date.now() - this.startedAtMs) / 1000),
        stateDir: this.cfg.stateDir,
      },
      backend: {
        kind: b?.kind ?? 'none',
        reason: b?.reason ?? 'not open',
        driverError: this.selection?.driverError?.message ?? null,
        warnings: this.selection?.warnings ?? [],
      },
      system: b ? b.system() : null,
      devices: [...this.devices.values()].sort((x, y) => x.index - y.index),
      activeFaults: this.store?.activeFaults() ?? [],
      controlPlane: { ...cp, transportWarning: this.transportWarning },
      events: {
        pending: this.store?.pendingCount() ?? 0,
        store: this.store ? { ...this.store.stats(), appendFailures: this.appendFailures } : null,
      },
      durability: { durable: this.stateDir !== null, stateDir: this.stateDir, problem: this.volatileReason },
      ...(this.faultHistory ? { faultHistory: this.faultHistory.status() } : {}),
      kmsg,
      ...(this.fabricManager ? { fabricManager: this.fabricManager.status() } : {}),
      watch: this.watch?.stats() ?? null,
      overrides: { rules: faultOverridesJson(this.cfg.faultOverrides), suppressedTotal: this.suppressed.total, suppressed: this.suppressed.rules() },
      api: this.api?.status() ?? null,
    };
  }

  get inject(): ((fault: FakeFault) => Promise<void>) | undefined {
    const b = this.backend;
    if (!b || !isInjectable(b)) return undefined;
    return async (fault: FakeFault) => {
      b.inject(fault);
      // Sample right away so telemetry-driven faults (temperature, ECC counters, ...) show up
      // without waiting for the next interval.
      await this.telemetry?.sampleNow();
    };
  }

  /**
   * An operator's clear (POST /faults/clear): each named active fault gets a clear event, stored
   * durably (which ends the fault) and sent to the control plane like any clear. The telemetry
   * judge forgets the condition, so a fault that is still there is raised again by the next sample
   * (as the kernel log and NVML raise theirs again on their next line or event), and the fault
   * history forgets it (reboot-aware escalation counts again from zero). Resolves with the
   * keys cleared, in the store's order; empty when the selector names no active fault.
   */
  async clearFaults(selector: ClearSelector, reason: string): Promise<{ cleared: string[] }> {
    const store = this.store;
    if (!store) return { cleared: [] };
    const cleared: string[] = [];
    for (const f of selectFaults(store.activeFaults(), selector)) {
      await store.append(operatorClearInput(f, reason, Date.now()));
      this.telemetry?.forget(f.key);
      this.fabricManager?.forget(f.key);
      // As gpud's SetHealthy: the operator says the GPU is fine, so the reboot count starts again.
      this.faultHistory?.forgetKey(f.key);
      cleared.push(f.key);
    }
    if (cleared.length > 0) this.log.info({ component: 'events', cleared, reason }, `operator cleared ${cleared.length} fault(s)`);
    return { cleared };
  }

  /** Wait until every event handed to ingest() so far is in the store. */
  async drainIngest(): Promise<void> {
    while (this.ingestQueue.size > 0) await Promise.allSettled([...this.ingestQueue]);
  }

  /**
   * Stop sources, store what is in flight, push pending events to the control plane within the
   * shutdown deadline (final report), then close everything. Idempotent.
   */
  stop(reason = 'stop'): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop(reason);
    return this.stopping;
  }

  private async doStop(reason: string): Promise<void> {
    const log = this.log;
    log.info({ reason }, 'stopping');
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.selection?.scenario?.run?.stop();
    await Promise.allSettled([this.watch?.stop(), this.telemetry?.stop(), this.kmsg?.stop(), this.fabricManager?.stop()]);
    await this.drainIngest();
    await this.faultHistory?.flush();
    log.debug('sources stopped');
    if (this.link) {
      const deadline = Date.now() + this.cfg.shutdownTimeoutMs;
      try {
        await this.link.stop({ deadlineMs: Math.max(0, deadline - Date.now()) });
      } catch (err) {
        log.warn({ err }, 'control-plane link did not stop cleanly');
      }
    }
    const pending = this.store?.pendingCount() ?? 0;
    if (pending > 0) log.warn({ pending }, 'events still pending at exit: kept on disk, sent on the next start');
    await this.store?.close().catch((err: unknown) => log.error({ err }, 'closing the event store failed'));
    log.debug('event store closed');
    await this.api?.close();
    log.debug('local API closed');
    await this.backend?.close().catch((err: unknown) => log.warn({ err }, 'closing the GPU backend failed'));
    log.debug('GPU backend closed');
    this.client?.close();
    log.info('stopped');
  }
}
