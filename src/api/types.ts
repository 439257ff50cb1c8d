/**
 * What the local API (src/api/server.ts) needs from the running agent. The daemon
 * (src/agent/agent.ts) implements it; API unit tests implement it with plain objects.
 */
import type { ApiListenStatus } from './listener.js';
import type { FaultHistoryStatus } from '../agent/fault-history.js';
import type { ActiveFault } from '../events/types.js';
import type { ClearSelector } from '../events/operator-clear.js';
import type { BackendKind, FakeFault } from '../backends/types.js';
import type { DeviceInfo, NvmlErrorInfo, SystemInfo, Telemetry, WatchStats } from '../nvml/types.js';
import type { FabricManagerStatus } from '../sources/fabric-manager.js';

export interface DeviceStatus extends DeviceInfo {
  /** Latest telemetry, null before the first sample or when the last sample failed. */
  telemetry: Telemetry | null;
  /** Error of the latest sample (a lost or hung GPU), null when it succeeded. */
  sampleError: NvmlErrorInfo | null;
  /** When the latest sample was taken (ms since the epoch), null before the first. */
  sampledAtMs: number | null;
  /** Last XID seen on this GPU (from NVML or the kernel log), 0 when none. */
  lastXid: number;
}

export type ControlPlaneState = 'disabled' | 'connecting' | 'connected' | 'disconnected' | 'unauthorized';

export interface ControlPlaneStatus {
  server: string;
  state: ControlPlaneState;
  registered: boolean;
  /** Node status the control plane last returned (e.g. "NODE_STATUS_UNHEALTHY"), null when unknown. */
  nodeStatus: string | null;
  lastError: string | null;
  lastContactMs: number | null;
  /** Set when reports travel in clear text to a non-loopback host (src/controlplane/url-policy.ts). */
  transportWarning?: string | null;
}

export interface KmsgStatus {
  enabled: boolean;
  path: string | null;
  /** "running", "disabled", "unavailable: <reason>", "stopped". */
  state: string;
  linesRead?: number;
  xidsMatched?: number;
  unresolvedPci?: number;
  overruns?: number;
  /** Records the ring buffer dropped before they were read (gaps in /dev/kmsg sequence numbers). */
  lostRecords?: number;
  lastSeq?: string | null;
  mode?: string;
  /** "native": the addon's reader thread drains /dev/kmsg; "js": reads on the JavaScript thread. */
  reader?: string | null;
  /** Records the native reader dropped because its queue was full (the JavaScript thread stalled). */
  queueDropped?: number;
}

export interface AgentStatus {
  agent: { version: string; nodeId: string; pid: number; startedAtMs: number; uptimeS: number; stateDir: string };
  backend: { kind: BackendKind; reason: string; driverError: string | null; warnings: string[] };
  system: SystemInfo | null;
  devices: DeviceStatus[];
  activeFaults: ActiveFault[];
  controlPlane: ControlPlaneStatus;
  events: { pending: number; store: Record<string, unknown> | null };
  /** Whether events survive a restart: false when no state directory was writable (src/agent/state-dir.ts). */
  durability?: { durable: boolean; stateDir: string | null; problem: string | null };
  /** Reboot-aware escalation's history (src/agent/fault-history.ts). */
  faultHistory?: FaultHistoryStatus;
  kmsg: KmsgStatus;
  /** nvidia-fabricmanager checks (src/sources/fabric-manager.ts); state no_nvswitch on hosts without NVSwitches. */
  fabricManager?: FabricManagerStatus;
  watch: WatchStats | null;
  /** The config's faultOverrides and what its suppressions held back (src/events/overrides.ts). */
  overrides?: {
    rules: Array<{ rule: string; severity?: string; action?: string; suppress?: true }>;
    suppressedTotal: number;
    suppressed: Array<{ rule: string; count: number; lastKey: string; lastMs: number }>;
  };
  /** The local API's listener: retries while its port is taken (src/api/listener.ts). */
  api?: ApiListenStatus | null;
}

export interface AgentView {
  /** True while the main loop ticks (liveness). */
  alive(): boolean;
  status(): AgentStatus;
  /** Present only when the backend can inject (fake backend). */
  inject?: (fault: FakeFault) => Promise<void> | void;
  /** An operator's clear (POST /faults/clear, src/events/operator-clear.ts): the keys cleared. */
  clearFaults?: (selector: ClearSelector, reason: string) => Promise<{ cleared: string[] }>;
}
