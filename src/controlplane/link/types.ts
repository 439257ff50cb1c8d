/**
 * The control-plane link's public shapes: its options, its status, and what it tells its owner
 * (RPC outcomes, TERMINATE). Types only.
 */
import type { Logger } from 'pino';
import type { HealthEvent } from '../../events/types.js';
import type { EventStore } from '../../store/types.js';
import type { Clock } from '../../util/clock.js';
import type { ControlPlaneClient } from '../client.js';
import type { CheckResult, NodeInventory, NodeMetricsSample } from '../model.js';
import type { VerdictMode } from '../node-state.js';
import type { TerminationMarker } from './termination-marker.js';

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
  /** Time for every wait, timer and timestamp of the link (default: the system clock; tests pass a manual one). */
  clock?: Clock;
}
