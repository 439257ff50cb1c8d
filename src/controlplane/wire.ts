/**
 * Conversions between the agent's model (events, faults, and the shapes in model.ts) and
 * Navarch's protobuf messages. Pure functions; both the delivery loops and the development
 * control plane use them.
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromMs, timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { ActiveFault, HealthEvent as AgentEvent, HealthWatchSystem, NavarchEventType } from '../events/types.js';
import {
  GPUInfoSchema,
  GPUMetricsSchema,
  HealthCheckResultSchema,
  HealthEventSchema,
  HealthEventType,
  HealthStatus,
  HealthWatchSystem as PbSystem,
  NodeMetadataSchema,
  NodeMetricsSchema,
  RegisterNodeRequestSchema,
  type HealthCheckResult as PbCheckResult,
  type HealthEvent as PbHealthEvent,
  type NodeMetrics as PbNodeMetrics,
  type RegisterNodeRequest,
} from '../gen/navarch/control_plane_pb.js';
import type { CheckResult, CheckStatus, NodeInventory, NodeMetricsSample } from './model.js';
import { navarchForm } from './vocabulary.js';

// ---------------------------------------------------------------------------------------------
// Enums

const EVENT_TYPES: Record<NavarchEventType, HealthEventType> = {
  unknown: HealthEventType.UNKNOWN,
  xid: HealthEventType.XID,
  thermal: HealthEventType.THERMAL,
  power: HealthEventType.POWER,
  memory: HealthEventType.MEMORY,
  nvlink: HealthEventType.NVLINK,
  pcie: HealthEventType.PCIE,
  driver_error: HealthEventType.DRIVER_ERROR,
  ecc_sbe: HealthEventType.ECC_SBE,
  ecc_dbe: HealthEventType.ECC_DBE,
};

const SYSTEMS: Record<HealthWatchSystem, PbSystem> = {
  UNKNOWN: PbSystem.UNKNOWN,
  PCIE: PbSystem.PCIE,
  NVLINK: PbSystem.NVLINK,
  PMU: PbSystem.PMU,
  MCU: PbSystem.MCU,
  MEM: PbSystem.MEM,
  SM: PbSystem.SM,
  INFOROM: PbSystem.INFOROM,
  THERMAL: PbSystem.THERMAL,
  POWER: PbSystem.POWER,
  DRIVER: PbSystem.DRIVER,
  NVSWITCH: PbSystem.NVSWITCH,
};

export function eventTypeToProto(t: NavarchEventType): HealthEventType {
  return EVENT_TYPES[t] ?? HealthEventType.UNKNOWN;
}

export function systemToProto(s: HealthWatchSystem): PbSystem {
  return SYSTEMS[s] ?? PbSystem.UNKNOWN;
}

/** CEL string of a HealthEventType as Navarch's evaluator sees it ("xid", "thermal", ...). */
export function eventTypeCelName(t: HealthEventType): NavarchEventType {
  for (const [k, v] of Object.entries(EVENT_TYPES)) if (v === t) return k as NavarchEventType;
  return 'unknown';
}

/** CEL string of a HealthWatchSystem ("DCGM_HEALTH_WATCH_MEM", ...). */
export function systemCelName(s: PbSystem): string {
  for (const [k, v] of Object.entries(SYSTEMS)) if (v === s && k !== 'UNKNOWN') return `DCGM_HEALTH_WATCH_${k}`;
  return 'DCGM_HEALTH_WATCH_UNKNOWN';
}

export function checkStatusToProto(s: CheckStatus): HealthStatus {
  switch (s) {
    case 'healthy':
      return HealthStatus.HEALTHY;
    case 'degraded':
      return HealthStatus.DEGRADED;
    case 'unhealthy':
      return HealthStatus.UNHEALTHY;
    default:
      return HealthStatus.UNKNOWN;
  }
}

// ---------------------------------------------------------------------------------------------
// Events

/** Metric keys Navarch's CEL policy reads as integers. */
export const INTEGER_POLICY_KEYS = ['xid_code', 'temperature', 'ecc_sbe_count', 'ecc_dbe_count', 'link_id'] as const;

/**
 * Normalises a policy key's value to a plain base-10 integer string ("79", not " 79" or "79.0"),
 * which Go's strconv.ParseInt accepts and CEL sees as int. Non-numeric values are left alone.
 */
export function plainInteger(v: string): string {
  const t = v.trim();
  if (/^-?\d+$/.test(t)) return String(BigInt(t));
  if (/^\+\d+$/.test(t)) return String(BigInt(t.slice(1)));
  const n = Number(t);
  if (t !== '' && Number.isFinite(n)) return BigInt(Math.trunc(n)).toString();
  return v;
}

function normaliseMetrics(metrics: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metrics)) out[k] = String(v);
  for (const k of INTEGER_POLICY_KEYS) {
    const v = out[k];
    if (v !== undefined) out[k] = plainInteger(v);
  }
  return out;
}

/** A usable epoch-ms value (a non-finite or out-of-range time becomes now). */
function safeMs(ms: number | undefined): number {
  return typeof ms === 'number' && Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? Math.round(ms) : Date.now();
}

function gpuIndexOf(i: number): number {
  return Number.isInteger(i) && i >= 0 && i <= 0x7fffffff ? i : -1;
}

/**
 * A stored event as a proto HealthEvent. The agent's extras go into metrics as plain strings
 * (`count`, `event_id`, `severity`, `action`, `source`, `fault_key`), never overriding a key the
 * source set; gpu_index is explicit (-1 for node level).
 */
/**
 * eventToProto that never throws: an event that cannot be converted is sent as a node-level
 * "unknown" event naming it (so it is delivered and acknowledged instead of blocking the queue).
 */
export function eventToProtoSafe(ev: AgentEvent): PbHealthEvent {
  try {
    return eventToProto(ev);
  } catch (e) {
    return create(HealthEventSchema, {
      timestamp: timestampFromMs(Date.now()),
      gpuIndex: -1,
      eventType: HealthEventType.UNKNOWN,
      system: PbSystem.UNKNOWN,
      metrics: { event_id: String(ev?.id ?? ''), conversion_error: String((e as Error).message).slice(0, 200) },
      message: `unconvertible agent event ${String(ev?.id ?? '')}`,
    });
  }
}

/** The fields an agent event and an active fault share on the wire. */
interface WireFields {
  timeMs: number;
  gpuIndex: number;
  gpuUuid?: string;
  system: AgentEvent['system'];
  type: AgentEvent['type'];
  message?: string;
  metrics?: Record<string, string>;
}

/** A proto HealthEvent: the source's metrics (normalised) plus the agent's extras where the source has no such key. */
function toProtoEvent(f: WireFields, extras: Record<string, string | undefined>): PbHealthEvent {
  const metrics = normaliseMetrics(f.metrics ?? {});
  for (const [k, v] of Object.entries(extras)) if (metrics[k] === undefined && v !== undefined) metrics[k] = v;
  return create(HealthEventSchema, {
    timestamp: timestampFromMs(safeMs(f.timeMs)),
    gpuIndex: gpuIndexOf(f.gpuIndex),
    gpuUuid: f.gpuUuid ?? '',
    system: systemToProto(f.system),
    eventType: eventTypeToProto(f.type),
    metrics,
    message: f.message ?? '',
  });
}

export function eventToProto(ev: AgentEvent): PbHealthEvent {
  const form = navarchForm(ev);
  return toProtoEvent(
    { ...ev, type: form.type, system: form.system },
    {
      ...form.metrics,
      count: String(ev.count ?? 1),
      event_id: ev.id,
      severity: ev.severity,
      action: ev.action,
      source: ev.source,
      fault_key: ev.key,
    },
  );
}

/** An active fault re-asserted after (re-)registration, as a proto HealthEvent. */
export function faultToProto(f: ActiveFault): PbHealthEvent {
  const form = navarchForm({ ...f, fault: 'raise' });
  return toProtoEvent(
    { ...f, type: form.type, system: form.system, timeMs: f.lastSeenMs },
    {
      ...form.metrics,
      count: String(f.count),
      event_id: f.lastEventId,
      severity: f.severity,
      action: f.action,
      fault_key: f.key,
      reasserted: 'true',
      since: new Date(safeMs(f.sinceMs)).toISOString(),
    },
  );
}

export function resultToProto(r: CheckResult): PbCheckResult {
  const details: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.details ?? {})) details[String(k)] = String(v);
  return create(HealthCheckResultSchema, {
    checkName: String(r.name ?? ''),
    status: checkStatusToProto(r.status),
    message: String(r.message ?? ''),
    timestamp: timestampFromMs(safeMs(r.timeMs ?? Date.now())),
    details,
  });
}

// ---------------------------------------------------------------------------------------------
// Registration and heartbeat

export function inventoryToRegisterRequest(inv: NodeInventory): RegisterNodeRequest {
  const labels: Record<string, string> = { ...(inv.labels ?? {}) };
  if (inv.pool) labels.pool = inv.pool;
  return create(RegisterNodeRequestSchema, {
    nodeId: inv.nodeId,
    provider: inv.provider ?? '',
    region: inv.region ?? '',
    zone: inv.zone ?? '',
    instanceType: inv.instanceType ?? '',
    gpus: (inv.gpus ?? []).map((g) =>
      create(GPUInfoSchema, {
        index: int32(g.index),
        uuid: g.uuid ?? '',
        name: g.name ?? '',
        pciBusId: g.pciBusId ?? '',
        memoryTotal: BigInt(Math.max(0, Math.trunc(finiteOr(g.memoryTotalBytes, 0)))),
        driverVersion: g.driverVersion ?? '',
        cudaVersion: g.cudaVersion ?? '',
      }),
    ),
    metadata: create(NodeMetadataSchema, {
      hostname: inv.hostname || inv.nodeId,
      internalIp: inv.internalIp ?? '',
      externalIp: inv.externalIp ?? '',
      kernelVersion: inv.kernelVersion ?? '',
      labels,
    }),
  });
}

function finiteOr(v: number | null | undefined, d: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : d;
}

function int32(v: number | null | undefined): number {
  const n = Math.trunc(finiteOr(v, 0));
  return Math.max(-0x80000000, Math.min(0x7fffffff, n));
}

export function metricsToProto(m: NodeMetricsSample): PbNodeMetrics {
  return create(NodeMetricsSchema, {
    cpuUsagePercent: finiteOr(m.cpuUsagePercent, 0),
    memoryUsagePercent: finiteOr(m.memoryUsagePercent, 0),
    gpuMetrics: (m.gpus ?? []).map((g) =>
      create(GPUMetricsSchema, {
        gpuIndex: int32(g.index),
        temperature: int32(g.temperatureC),
        powerUsage: int32(g.powerW),
        utilizationPercent: finiteOr(g.utilizationPercent, 0),
        memoryUsed: BigInt(Math.max(0, Math.trunc(finiteOr(g.memoryUsedBytes, 0)))),
      }),
    ),
  });
}

export function tsToMs(ts: Timestamp | undefined): number | null {
  return ts ? timestampMs(ts) : null;
}
