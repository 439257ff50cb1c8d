/**
 * The development control plane: Navarch's ControlPlaneService on loopback with an in-memory
 * store, the same node-facing rules as Navarch's Go control plane (registration replaces the
 * record, NotFound for unknown nodes, the default health policy, sticky UNHEALTHY, at-most-once
 * command delivery, static bearer token checked before connect runs) and a live, readable view.
 *
 * One port serves Connect, gRPC and gRPC-Web over HTTP/1.1 and h2c (prior knowledge), plus
 * /healthz and /readyz. Used by tests, benchmarks and `navarch-agent control-plane --dev`.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Writable } from 'node:stream';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import {
  ControlPlaneService,
  GetInstanceResponseSchema,
  GetNodeCommandsResponseSchema,
  GetNodeResponseSchema,
  HealthCheckResultSchema,
  HealthStatus,
  HeartbeatResponseSchema,
  InstanceInfoSchema,
  InstanceState,
  IssueCommandResponseSchema,
  ListInstancesResponseSchema,
  ListNodesResponseSchema,
  NodeCommandSchema,
  NodeCommandType,
  NodeConfigSchema,
  NodeInfoSchema,
  NodeStatus,
  RegisterNodeResponseSchema,
  ReportHealthResponseSchema,
  type GPUInfo,
  type HealthCheckResult,
  type HealthEvent as PbHealthEvent,
  type NodeCommand,
  type NodeMetadata,
  type NodeMetrics,
} from '../gen/navarch/control_plane_pb.js';
import { evaluateEvents, navarchDefaultPolicy, type HealthPolicy } from './policy.js';
import { eventTypeCelName, systemCelName } from '../controlplane/wire.js';

/** Go's zero time.Time (0001-01-01T00:00:00Z) in ms since the epoch. */
const GO_ZERO_TIME_MS = -62_135_596_800_000;

export interface DevControlPlaneOptions {
  /** Port (default 0 = ephemeral). */
  port?: number;
  /** Bind address (default 127.0.0.1). */
  host?: string;
  /** When set, every RPC needs `Authorization: Bearer <token>` (HTTP 401 otherwise). */
  authToken?: string;
  /** Sent in RegisterNodeResponse.config (default 60, Navarch's default). */
  healthCheckIntervalSeconds?: number;
  /** Sent in RegisterNodeResponse.config (default 30). */
  heartbeatIntervalSeconds?: number;
  /** Live view: true = stdout, a stream = that stream, false/undefined = silent. */
  print?: boolean | Writable;
  /** Redraw a node table (only when the print stream is a TTY). Default true. */
  table?: boolean;
  /**
   * Navarch's heartbeat monitor, always on: a node whose last heartbeat is older than this is
   * marked UNHEALTHY (Status and HealthStatus), scanned every heartbeat interval. Default, as
   * Navarch: 3 x heartbeatIntervalSeconds. Nodes that never sent a heartbeat, and UNHEALTHY /
   * TERMINATED ones, are skipped (as Navarch). 0 (or a 0 heartbeat interval) turns it off.
   */
  heartbeatTimeoutSeconds?: number;
  /** Bound of the received-event history per node (default 10000). */
  maxEventsPerNode?: number;
  /**
   * The health policy events are judged with (Navarch's server.health_policy); default Navarch's
   * own default policy (deploy/navarch/navarch-default-policy.yaml). See loadPolicyFile().
   */
  healthPolicy?: HealthPolicy;
}

/** An event as the dev control plane received it. */
export interface ReceivedEvent {
  nodeId: string;
  receivedAtMs: number;
  /** hrtime (ns) at reception, comparable with process.hrtime.bigint() in the same process. */
  receivedAtNs: bigint;
  timeMs: number | null;
  gpuIndex: number;
  gpuUuid: string;
  /** CEL names: "xid", "DCGM_HEALTH_WATCH_DRIVER". */
  eventType: string;
  system: string;
  metrics: Record<string, string>;
  message: string;
  /** Rule of the default policy that matched this event. */
  rule: string;
  verdict: 'healthy' | 'degraded' | 'unhealthy' | 'unknown';
}

/** A check result as the dev control plane received it in ReportHealth (agent-sent only). */
export interface ReceivedResult {
  nodeId: string;
  receivedAtMs: number;
  checkName: string;
  status: 'healthy' | 'degraded' | 'unhealthy' | 'unknown';
  message: string;
  details: Record<string, string>;
}

export type DevNodeStatus = 'unknown' | 'active' | 'cordoned' | 'draining' | 'unhealthy' | 'terminated';
export type DevHealthStatus = 'unknown' | 'healthy' | 'degraded' | 'unhealthy';

export interface DevNodeView {
  nodeId: string;
  provider: string;
  region: string;
  zone: string;
  instanceType: string;
  gpus: Array<{ index: number; uuid: string; name: string; pciBusId: string; memoryTotal: bigint; driverVersion: string; cudaVersion: string }>;
  metadata: { hostname: string; internalIp: string; externalIp: string; kernelVersion: string; labels: Record<string, string> };
  status: DevNodeStatus;
  healthStatus: DevHealthStatus;
  registeredAtMs: number;
  registrations: number;
  lastHeartbeatMs: number | null;
  lastHealthCheckMs: number | null;
  heartbeats: number;
  reports: number;
  lastMetrics: NodeMetrics | null;
  lastResults: Array<{ checkName: string; status: DevHealthStatus; message: string; details: Record<string, string> }>;
}

/** One ReportHealth as judged: the node's health computed from that report alone. */
export interface ReceivedReport {
  nodeId: string;
  receivedAtMs: number;
  receivedAtNs: bigint;
  health: DevHealthStatus;
  /** Check results of the report with their status, the control plane's cel_policy included. */
  results: Array<{ checkName: string; status: DevHealthStatus }>;
  events: number;
}

export interface IssuedCommand {
  commandId: string;
  issuedAtMs: number;
  /** False for control-plane-only commands (CORDON/DRAIN/UNCORDON) unless forced with `queue`. */
  queued: boolean;
}

export interface DevControlPlane {
  url: string;
  port: number;
  host: string;
  close(): Promise<void>;
  nodes(): DevNodeView[];
  node(nodeId: string): DevNodeView | undefined;
  /** Every event received for the node (kept across forget()), oldest first. */
  events(nodeId: string): ReceivedEvent[];
  /** Check results the node sent in ReportHealth (kept across forget(); bounded like events), oldest first. */
  results(nodeId: string): ReceivedResult[];
  /**
   * Issue a command as IssueCommand does. CORDON/DRAIN/UNCORDON change the status only (Navarch
   * never delivers them) unless `queue: true`; RUN_DIAGNOSTIC/TERMINATE are queued.
   */
  issueCommand(
    nodeId: string,
    type: 'cordon' | 'drain' | 'uncordon' | 'run_diagnostic' | 'terminate' | NodeCommandType,
    parameters?: Record<string, string>,
    opts?: { queue?: boolean },
  ): IssuedCommand;
  /** Forget a node as a restarted control plane would (its record and queued commands). */
  forget(nodeId: string): boolean;
  /** Called for each received event (benchmarks). Returns an unsubscribe function. */
  onEvent(listener: (ev: ReceivedEvent) => void): () => void;
  /** Called after each ReportHealth with the health it computed (flap tests, benchmarks). Returns an unsubscribe function. */
  onReport(listener: (r: ReceivedReport) => void): () => void;
  /** Count of RPCs by method name (including failed ones); "unauthorized" counts HTTP 401 answers. */
  calls(): Record<string, number>;
  /** TCP connections accepted so far (a keep-alive client makes one, not one per call). */
  connections(): number;
}

interface NodeRecord {
  nodeId: string;
  provider: string;
  region: string;
  zone: string;
  instanceType: string;
  gpus: GPUInfo[];
  metadata: NodeMetadata | undefined;
  status: NodeStatus;
  healthStatus: HealthStatus;
  registeredAtMs: number;
  registrations: number;
  lastHeartbeatMs: number | null;
  lastHealthCheckMs: number | null;
  heartbeats: number;
  reports: number;
  metrics: NodeMetrics[];
  lastResults: HealthCheckResult[];
}

interface PendingCommand {
  nodeId: string;
  command: NodeCommand;
  state: 'pending' | 'acknowledged' | 'completed';
}

const STATUS_NAME: Record<number, DevNodeStatus> = {
  [NodeStatus.UNKNOWN]: 'unknown',
  [NodeStatus.ACTIVE]: 'active',
  [NodeStatus.CORDONED]: 'cordoned',
  [NodeStatus.DRAINING]: 'draining',
  [NodeStatus.UNHEALTHY]: 'unhealthy',
  [NodeStatus.TERMINATED]: 'terminated',
};
const HEALTH_NAME: Record<number, DevHealthStatus> = {
  [HealthStatus.UNKNOWN]: 'unknown',
  [HealthStatus.HEALTHY]: 'healthy',
  [HealthStatus.DEGRADED]: 'degraded',
  [HealthStatus.UNHEALTHY]: 'unhealthy',
};

const COMMAND_TYPES: Record<string, NodeCommandType> = {
  cordon: NodeCommandType.CORDON,
  drain: NodeCommandType.DRAIN,
  uncordon: NodeCommandType.UNCORDON,
  run_diagnostic: NodeCommandType.RUN_DIAGNOSTIC,
  terminate: NodeCommandType.TERMINATE,
};

const MAX_METRICS = 100;
const MAX_COMMANDS = 10_000;

function requireNodeId(nodeId: string): void {
  if (nodeId === '') throw new ConnectError('node_id is required', Code.InvalidArgument);
}

function tokenMatches(header: string | undefined, expected: Buffer): boolean {
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false;
  const got = Buffer.from(header.slice('Bearer '.length));
  if (got.length !== expected.length) {
    timingSafeEqual(expected, expected);
    return false;
  }
  return timingSafeEqual(got, expected);
}

export async function startDevControlPlane(opts: DevControlPlaneOptions = {}): Promise<DevControlPlane> {
  const host = opts.host ?? '127.0.0.1';
  const hcInterval = opts.healthCheckIntervalSeconds ?? 60;
  const hbInterval = opts.heartbeatIntervalSeconds ?? 30;
  const policy = opts.healthPolicy ?? navarchDefaultPolicy();
  const maxEvents = opts.maxEventsPerNode ?? 10_000;
  const out: Writable | null = opts.print === true ? process.stdout : opts.print ? opts.print : null;
  const expectedToken = opts.authToken ? Buffer.from(opts.authToken) : null;

  const nodes = new Map<string, NodeRecord>();
  const history = new Map<string, ReceivedEvent[]>();
  const resultHistory = new Map<string, ReceivedResult[]>();
  const commands: PendingCommand[] = [];
  const listeners = new Set<(ev: ReceivedEvent) => void>();
  const reportListeners = new Set<(r: ReceivedReport) => void>();
  const callCounts: Record<string, number> = {};

  // ---- live view ----------------------------------------------------------------------------
  const isTty = out !== null && (out as Writable & { isTTY?: boolean }).isTTY === true && opts.table !== false;
  let tableTimer: NodeJS.Timeout | null = null;
  const recentLines: string[] = [];
  const say = (line: string): void => {
    if (!out) return;
    const stamped = `${new Date().toISOString().slice(11, 23)} ${line}`;
    if (isTty) {
      recentLines.push(stamped);
      if (recentLines.length > 12) recentLines.shift();
      scheduleTable();
    } else {
      out.write(stamped + '\n');
    }
  };
  const scheduleTable = (): void => {
    if (!isTty || tableTimer) return;
    tableTimer = setTimeout(() => {
      tableTimer = null;
      drawTable();
    }, 200);
  };
  const drawTable = (): void => {
    if (!out) return;
    const rows = [...nodes.values()].map((n) => {
      const hb = n.lastHeartbeatMs ? `${Math.round((Date.now() - n.lastHeartbeatMs) / 1000)}s ago` : '-';
      return [
        n.nodeId,
        STATUS_NAME[n.status] ?? '?',
        HEALTH_NAME[n.healthStatus] ?? '?',
        String(n.gpus.length),
        hb,
        String(history.get(n.nodeId)?.length ?? 0),
      ];
    });
    const head = ['NODE', 'STATUS', 'HEALTH', 'GPUS', 'HEARTBEAT', 'EVENTS'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    const fmt = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
    const lines = [`navarch dev control plane ${url}`, '', fmt(head), ...rows.map(fmt), '', ...recentLines];
    out.write('\x1b[H\x1b[2J' + lines.join('\n') + '\n');
  };

  const record = (nodeId: string, ev: ReceivedEvent): void => {
    let list = history.get(nodeId);
    if (!list) history.set(nodeId, (list = []));
    list.push(ev);
    if (list.length > maxEvents) list.splice(0, list.length - maxEvents);
    for (const l of listeners) {
      try {
        l(ev);
      } catch {
        // A listener's failure is its own.
      }
    }
  };

  const count = (method: string): void => {
    callCounts[method] = (callCounts[method] ?? 0) + 1;
  };

  const mustGet = (nodeId: string): NodeRecord => {
    const n = nodes.get(nodeId);
    if (!n) throw new ConnectError(`node not found: ${nodeId}`, Code.NotFound);
    return n;
  };

  const setStatus = (n: NodeRecord, status: NodeStatus, why: string): void => {
    if (n.status !== status) say(`node ${n.nodeId}: ${STATUS_NAME[n.status]} -> ${STATUS_NAME[status]} (${why})`);
    n.status = status;
    scheduleTable();
  };

  const nodeInfo = (n: NodeRecord) =>
    create(NodeInfoSchema, {
      nodeId: n.nodeId,
      provider: n.provider,
      region: n.region,
      zone: n.zone,
      instanceType: n.instanceType,
      status: n.status,
      healthStatus: n.healthStatus,
      // Always set, as Navarch's timestamppb.New(LastHeartbeat): Go's zero time before the first one.
      lastHeartbeat: timestampFromMs(n.lastHeartbeatMs ?? GO_ZERO_TIME_MS),
      gpus: n.gpus,
      metadata: n.metadata,
    });

  const instanceInfo = (n: NodeRecord) =>
    create(InstanceInfoSchema, {
      instanceId: n.nodeId,
      provider: n.provider,
      region: n.region,
      zone: n.zone,
      instanceType: n.instanceType,
      state: n.status === NodeStatus.TERMINATED ? InstanceState.TERMINATED : InstanceState.RUNNING,
      poolName: n.metadata?.labels.pool ?? '',
      nodeId: n.nodeId,
      statusMessage: 'registered with the development control plane',
      labels: { ...(n.metadata?.labels ?? {}) },
      createdAt: timestampFromMs(n.registeredAtMs),
      readyAt: timestampFromMs(n.registeredAtMs),
    });

  const issue = (nodeId: string, type: NodeCommandType, parameters: Record<string, string>, queue: boolean | undefined): IssuedCommand => {
    if (nodeId === '') throw new ConnectError('node_id is required', Code.InvalidArgument);
    if (type === NodeCommandType.UNKNOWN || (NodeCommandType[type] === undefined && !queue)) {
      throw new ConnectError('command_type is required', Code.InvalidArgument);
    }
    const n = mustGet(nodeId);
    const commandId = randomUUID();
    const issuedAtMs = Date.now();
    const command = create(NodeCommandSchema, { commandId, type, parameters, issuedAt: timestampFromMs(issuedAtMs) });
    const cpOnly = type === NodeCommandType.CORDON || type === NodeCommandType.DRAIN || type === NodeCommandType.UNCORDON;
    if (cpOnly) {
      if (type === NodeCommandType.UNCORDON && n.status !== NodeStatus.CORDONED && !queue) {
        throw new ConnectError(`node ${nodeId} is not cordoned (status ${STATUS_NAME[n.status]})`, Code.FailedPrecondition);
      }
      const to = type === NodeCommandType.CORDON ? NodeStatus.CORDONED : type === NodeCommandType.DRAIN ? NodeStatus.DRAINING : NodeStatus.ACTIVE;
      setStatus(n, to, `command ${NodeCommandType[type]}`);
    }
    const queued = !cpOnly || queue === true;
    commands.push({ nodeId, command, state: queued ? 'pending' : 'completed' });
    if (commands.length > MAX_COMMANDS) commands.splice(0, commands.length - MAX_COMMANDS);
    say(`node ${nodeId}: command ${NodeCommandType[type]} ${commandId.slice(0, 8)} ${queued ? 'queued' : 'applied (control-plane only)'}`);
    return { commandId, issuedAtMs, queued };
  };

  // ---- the service --------------------------------------------------------------------------
  const routes = (router: ConnectRouter): void => {
    router.service(ControlPlaneService, {
      registerNode(req) {
        count('RegisterNode');
        requireNodeId(req.nodeId);
        const prev = nodes.get(req.nodeId);
        const now = Date.now();
        const rec: NodeRecord = {
          nodeId: req.nodeId,
          provider: req.provider,
          region: req.region,
          zone: req.zone,
          instanceType: req.instanceType,
          gpus: req.gpus,
          metadata: req.metadata,
          status: NodeStatus.ACTIVE,
          healthStatus: HealthStatus.UNKNOWN,
          registeredAtMs: prev?.registeredAtMs ?? now,
          registrations: (prev?.registrations ?? 0) + 1,
          lastHeartbeatMs: prev?.lastHeartbeatMs ?? null,
          lastHealthCheckMs: prev?.lastHealthCheckMs ?? null,
          heartbeats: prev?.heartbeats ?? 0,
          reports: prev?.reports ?? 0,
          metrics: prev?.metrics ?? [],
          lastResults: [],
        };
        nodes.set(req.nodeId, rec);
        say(
          `node ${req.nodeId}: registered (${prev ? `re-registration #${rec.registrations}, was ${STATUS_NAME[prev.status]}` : 'new'}) ` +
            `${req.gpus.length} GPU(s) provider=${req.provider || '-'} pool=${req.metadata?.labels.pool || '-'}`,
        );
        scheduleTable();
        return create(RegisterNodeResponseSchema, {
          success: true,
          message: 'registration successful',
          config: create(NodeConfigSchema, {
            healthCheckIntervalSeconds: hcInterval,
            heartbeatIntervalSeconds: hbInterval,
            enabledHealthChecks: ['boot', 'nvml', 'xid'],
          }),
        });
      },

      reportHealth(req) {
        count('ReportHealth');
        const receivedAtNs = process.hrtime.bigint();
        const receivedAtMs = Date.now();
        requireNodeId(req.nodeId);
        const n = mustGet(req.nodeId);
        const results: HealthCheckResult[] = [...req.results];
        if (req.results.length > 0) {
          let list = resultHistory.get(req.nodeId);
          if (!list) resultHistory.set(req.nodeId, (list = []));
          for (const r of req.results) {
            list.push({
              nodeId: req.nodeId,
              receivedAtMs,
              checkName: r.checkName,
              status: HEALTH_NAME[r.status] ?? 'unknown',
              message: r.message,
              details: { ...r.details },
            });
          }
          if (list.length > maxEvents) list.splice(0, list.length - maxEvents);
        }
        if (req.events.length > 0) {
          const verdict = evaluateEvents(req.events, policy);
          if (verdict) {
            results.push(
              create(HealthCheckResultSchema, {
                checkName: 'cel_policy',
                status: verdict.status,
                message: `CEL policy: ${HEALTH_NAME[verdict.status]} (rule: ${verdict.rule})`,
              }),
            );
          }
          for (const ev of req.events) {
            const one = evaluateEvents([ev], policy);
            const rec: ReceivedEvent = {
              nodeId: req.nodeId,
              receivedAtMs,
              receivedAtNs,
              timeMs: ev.timestamp ? Number(ev.timestamp.seconds) * 1000 + Math.round(ev.timestamp.nanos / 1e6) : null,
              gpuIndex: ev.gpuIndex,
              gpuUuid: ev.gpuUuid,
              eventType: eventTypeCelName(ev.eventType),
              system: systemCelName(ev.system),
              metrics: { ...ev.metrics },
              message: ev.message,
              rule: one?.rule ?? 'none',
              verdict: HEALTH_NAME[one?.status ?? HealthStatus.UNKNOWN] ?? 'unknown',
            };
            record(req.nodeId, rec);
            if (out) say(describeEvent(rec));
          }
        }
        // Navarch's RecordHealthCheck: any UNHEALTHY -> UNHEALTHY (sticky Status), else DEGRADED, else HEALTHY.
        let health = HealthStatus.HEALTHY;
        for (const r of results) {
          if (r.status === HealthStatus.UNHEALTHY) health = HealthStatus.UNHEALTHY;
          else if (r.status === HealthStatus.DEGRADED && health !== HealthStatus.UNHEALTHY) health = HealthStatus.DEGRADED;
        }
        if (health !== n.healthStatus) say(`node ${n.nodeId}: health ${HEALTH_NAME[n.healthStatus]} -> ${HEALTH_NAME[health]}`);
        n.healthStatus = health;
        if (health === HealthStatus.UNHEALTHY) setStatus(n, NodeStatus.UNHEALTHY, 'health report');
        n.lastHealthCheckMs = Date.now();
        n.reports += 1;
        n.lastResults = results;
        if (reportListeners.size > 0) {
          const rep: ReceivedReport = {
            nodeId: req.nodeId,
            receivedAtMs,
            receivedAtNs,
            health: (HEALTH_NAME[health] ?? 'unknown') as DevHealthStatus,
            results: results.map((r) => ({ checkName: r.checkName, status: (HEALTH_NAME[r.status] ?? 'unknown') as DevHealthStatus })),
            events: req.events.length,
          };
          for (const l of reportListeners) l(rep);
        }
        scheduleTable();
        return create(ReportHealthResponseSchema, { acknowledged: true, nodeStatus: n.status });
      },

      sendHeartbeat(req) {
        count('SendHeartbeat');
        requireNodeId(req.nodeId);
        const n = mustGet(req.nodeId);
        n.lastHeartbeatMs = req.timestamp ? Number(req.timestamp.seconds) * 1000 + Math.round(req.timestamp.nanos / 1e6) : Date.now();
        n.heartbeats += 1;
        if (req.metrics) {
          n.metrics.push(req.metrics);
          if (n.metrics.length > MAX_METRICS) n.metrics.splice(0, n.metrics.length - MAX_METRICS);
        }
        scheduleTable();
        return create(HeartbeatResponseSchema, { acknowledged: true });
      },

      getNodeCommands(req) {
        count('GetNodeCommands');
        requireNodeId(req.nodeId);
        const out: NodeCommand[] = [];
        for (const c of commands) {
          if (c.nodeId === req.nodeId && c.state === 'pending') {
            c.state = 'acknowledged';
            out.push(c.command);
          }
        }
        if (out.length > 0) say(`node ${req.nodeId}: delivered ${out.map((c) => NodeCommandType[c.type]).join(', ')}`);
        return create(GetNodeCommandsResponseSchema, { commands: out });
      },

      listNodes(req) {
        count('ListNodes');
        const list = [...nodes.values()].filter(
          (n) =>
            (req.provider === '' || n.provider === req.provider) &&
            (req.region === '' || n.region === req.region) &&
            (req.status === NodeStatus.UNKNOWN || n.status === req.status),
        );
        return create(ListNodesResponseSchema, { nodes: list.map(nodeInfo) });
      },

      getNode(req) {
        count('GetNode');
        requireNodeId(req.nodeId);
        return create(GetNodeResponseSchema, { node: nodeInfo(mustGet(req.nodeId)) });
      },

      issueCommand(req) {
        count('IssueCommand');
        const r = issue(req.nodeId, req.commandType, { ...req.parameters }, false);
        return create(IssueCommandResponseSchema, { commandId: r.commandId, issuedAt: timestampFromMs(r.issuedAtMs) });
      },

      listInstances(req) {
        count('ListInstances');
        const list = [...nodes.values()]
          .map(instanceInfo)
          .filter(
            (i) =>
              (req.provider === '' || i.provider === req.provider) &&
              (req.region === '' || i.region === req.region) &&
              (req.state === InstanceState.UNKNOWN || i.state === req.state) &&
              (req.poolName === '' || i.poolName === req.poolName),
          );
        return create(ListInstancesResponseSchema, { instances: list });
      },

      getInstance(req, _ctx: HandlerContext) {
        count('GetInstance');
        if (req.instanceId === '') throw new ConnectError('instance_id is required', Code.InvalidArgument);
        const n = nodes.get(req.instanceId);
        if (!n) throw new ConnectError(`instance not found: ${req.instanceId}`, Code.NotFound);
        return create(GetInstanceResponseSchema, { instance: instanceInfo(n) });
      },
    });
  };

  const connectHandler = connectNodeAdapter({ routes });

  type Req = http.IncomingMessage | http2.Http2ServerRequest;
  type Res = http.ServerResponse | http2.Http2ServerResponse;
  const handle = (req: Req, res: Res): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/readyz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    if (expectedToken && !tokenMatches(req.headers.authorization, expectedToken)) {
      count('unauthorized');
      res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8', 'www-authenticate': 'Bearer realm="navarch"' });
      res.end('unauthorized\n');
      return;
    }
    (connectHandler as (req: Req, res: Res) => void)(req, res);
  };

  const h1 = http.createServer({ keepAliveTimeout: 65_000 }, handle);
  const h2 = http2.createServer({}, handle);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  // One port, two protocols: sniff the HTTP/2 connection preface ("PRI * HTTP/2.0").
  let accepted = 0;
  const front = net.createServer((socket) => {
    accepted++;
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      if (
        head.length < 4 &&
        !head
          .toString('latin1')
          .split('')
          .some((c, i) => c !== 'PRI '[i])
      )
        return;
      socket.off('data', onData);
      socket.pause();
      socket.unshift(head);
      const target = head.subarray(0, 4).toString('latin1') === 'PRI ' ? h2 : h1;
      target.emit('connection', socket);
      process.nextTick(() => socket.resume());
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    front.once('error', reject);
    front.listen(opts.port ?? 0, host, () => {
      front.off('error', reject);
      resolve();
    });
  });
  const addr = front.address() as net.AddressInfo;
  const hostForUrl = host.includes(':') ? `[${host}]` : host;
  const url = `http://${hostForUrl}:${addr.port}`;
  say(`development control plane listening on ${url}${expectedToken ? ' (bearer token required)' : ''}`);

  const hbTimeoutMs = Math.max(0, (opts.heartbeatTimeoutSeconds ?? 3 * hbInterval) * 1000);
  const monitor =
    hbTimeoutMs > 0
      ? setInterval(
          () => {
            const now = Date.now();
            for (const n of nodes.values()) {
              if (n.lastHeartbeatMs === null || n.status === NodeStatus.UNHEALTHY || n.status === NodeStatus.TERMINATED) continue;
              if (now - n.lastHeartbeatMs > hbTimeoutMs) {
                n.healthStatus = HealthStatus.UNHEALTHY;
                setStatus(n, NodeStatus.UNHEALTHY, `no heartbeat for ${Math.round((now - n.lastHeartbeatMs) / 1000)} s`);
              }
            }
          },
          Math.max(250, Math.min(hbTimeoutMs / 3, hbInterval > 0 ? hbInterval * 1000 : hbTimeoutMs)),
        )
      : null;
  monitor?.unref();

  let closed = false;
  return {
    url,
    port: addr.port,
    host,
    async close() {
      if (closed) return;
      closed = true;
      if (tableTimer) clearTimeout(tableTimer);
      if (monitor) clearInterval(monitor);
      const done = new Promise<void>((resolve) => front.close(() => resolve()));
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      h1.close();
      await done;
    },
    nodes: () => [...nodes.values()].map(view),
    node: (id) => {
      const n = nodes.get(id);
      return n ? view(n) : undefined;
    },
    events: (id) => [...(history.get(id) ?? [])],
    results: (id) => [...(resultHistory.get(id) ?? [])],
    issueCommand(nodeId, type, parameters = {}, o = {}) {
      const t = typeof type === 'string' ? COMMAND_TYPES[type] : type;
      if (t === undefined) throw new Error(`unknown command type ${String(type)}`);
      return issue(nodeId, t, parameters, o.queue);
    },
    forget(nodeId) {
      const had = nodes.delete(nodeId);
      for (let i = commands.length - 1; i >= 0; i--) if (commands[i]?.nodeId === nodeId) commands.splice(i, 1);
      if (had) say(`node ${nodeId}: forgotten`);
      return had;
    },
    onEvent(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    onReport(l) {
      reportListeners.add(l);
      return () => reportListeners.delete(l);
    },
    calls: () => ({ ...callCounts }),
    connections: () => accepted,
  };
}

function view(n: NodeRecord): DevNodeView {
  return {
    nodeId: n.nodeId,
    provider: n.provider,
    region: n.region,
    zone: n.zone,
    instanceType: n.instanceType,
    gpus: n.gpus.map((g) => ({
      index: g.index,
      uuid: g.uuid,
      name: g.name,
      pciBusId: g.pciBusId,
      memoryTotal: g.memoryTotal,
      driverVersion: g.driverVersion,
      cudaVersion: g.cudaVersion,
    })),
    metadata: {
      hostname: n.metadata?.hostname ?? '',
      internalIp: n.metadata?.internalIp ?? '',
      externalIp: n.metadata?.externalIp ?? '',
      kernelVersion: n.metadata?.kernelVersion ?? '',
      labels: { ...(n.metadata?.labels ?? {}) },
    },
    status: STATUS_NAME[n.status] ?? 'unknown',
    healthStatus: HEALTH_NAME[n.healthStatus] ?? 'unknown',
    registeredAtMs: n.registeredAtMs,
    registrations: n.registrations,
    lastHeartbeatMs: n.lastHeartbeatMs,
    lastHealthCheckMs: n.lastHealthCheckMs,
    heartbeats: n.heartbeats,
    reports: n.reports,
    lastMetrics: n.metrics[n.metrics.length - 1] ?? null,
    lastResults: n.lastResults.map((r) => ({
      checkName: r.checkName,
      status: HEALTH_NAME[r.status] ?? 'unknown',
      message: r.message,
      details: { ...r.details },
    })),
  };
}

function describeEvent(ev: ReceivedEvent): string {
  const where = ev.gpuIndex >= 0 ? `gpu${ev.gpuIndex}` : 'node';
  const m = Object.entries(ev.metrics)
    .filter(([k]) => !['event_id', 'fault_key', 'source'].includes(k))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `node ${ev.nodeId}: event ${where} ${ev.eventType} ${m} -> ${ev.verdict} (${ev.rule}) "${ev.message.slice(0, 80)}"`;
}

export type { PbHealthEvent };
