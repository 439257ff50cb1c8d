/**
 * Read commands without a running agent: one local snapshot of the GPUs (devices) and the active
 * faults kept in the state directory (faults).
 */
import { join } from 'node:path';
import type { DeviceStatus } from '../api/types.js';
import { selectBackend } from '../backends/select.js';
import type { AgentConfig } from '../config/config.js';
import { xidKey } from '../events/fault-key.js';
import type { ActiveFault } from '../events/types.js';
import type { SystemInfo } from '../nvml/types.js';
import { judgeSnapshot } from '../sources/telemetry.js';
import { readStoredFaults } from '../store/event-store.js';

export interface LocalSnapshot {
  backend: { kind: string; reason: string; driverError: string | null };
  /** Driver, NVML and CUDA versions the backend reports (null fields where it cannot tell). */
  system: SystemInfo;
  devices: DeviceStatus[];
  /** Faults judged locally from this one snapshot (lost GPUs, driver error). */
  faults: ActiveFault[];
}

export async function localSnapshot(cfg: AgentConfig, env: NodeJS.ProcessEnv): Promise<LocalSnapshot> {
  const sel = await selectBackend({
    mode: cfg.gpuBackend,
    env,
    ...(cfg.instanceType ? { instanceType: cfg.instanceType } : {}),
    ...(cfg.sysRoot ? { sysRoot: cfg.sysRoot } : {}),
    startScenario: false,
  });
  const b = sel.backend;
  try {
    const snaps = await b.snapshot();
    const now = Date.now();
    const faults: ActiveFault[] = [];
    if (sel.driverError) {
      faults.push(localFault({ ...sel.driverError, gpuIndex: -1, gpuUuid: '' }, sel.driverError.timeMs));
    }
    const devices: DeviceStatus[] = b.devices().map((d) => {
      const s = snaps.find((x) => x.index === d.index);
      const err = s && !s.ok ? s.error : null;
      if (err?.code === 'NVML_ERROR_GPU_IS_LOST' || d.error?.code === 'NVML_ERROR_GPU_IS_LOST') {
        faults.push(
          localFault(
            {
              key: xidKey(d.index, 79),
              gpuIndex: d.index,
              gpuUuid: d.uuid,
              type: 'xid',
              system: 'DRIVER',
              severity: 'critical',
              action: 'reboot',
              message: `GPU ${d.index} is lost (fallen off the bus)`,
              metrics: { xid_code: '79' },
            },
            now,
          ),
        );
      }
      return {
        ...d,
        telemetry: s && s.ok ? s.telemetry : null,
        sampleError: err,
        sampledAtMs: s?.takenAtMs ?? null,
        lastXid: 0,
      };
    });
    // Threshold judgement of this one snapshot (temperature, ECC, row remapping, ...).
    for (const e of judgeSnapshot(null, snaps).events) {
      if (e.fault !== 'raise' || faults.some((f) => f.key === e.key)) continue;
      faults.push(localFault(e, e.timeMs, e.count ?? 1));
    }
    return { backend: { kind: b.kind, reason: b.reason, driverError: sel.driverError?.message ?? null }, system: b.system(), devices, faults };
  } finally {
    await b.close().catch(() => undefined);
  }
}

/** What a locally judged fault says; the rest of an ActiveFault is filled in by localFault. */
type FaultFacts = Pick<ActiveFault, 'key' | 'gpuIndex' | 'gpuUuid' | 'type' | 'system' | 'severity' | 'action' | 'message' | 'metrics'>;

/** A fault judged from this one snapshot: first and last seen at `atMs`, no stored event behind it. */
function localFault(f: FaultFacts, atMs: number, count = 1): ActiveFault {
  return {
    key: f.key,
    gpuIndex: f.gpuIndex,
    gpuUuid: f.gpuUuid,
    type: f.type,
    system: f.system,
    severity: f.severity,
    action: f.action,
    message: f.message,
    metrics: f.metrics,
    sinceMs: atMs,
    lastSeenMs: atMs,
    count,
    lastEventId: '',
  };
}

/**
 * Active faults stored in the state directory (empty when there is no store yet). Read-only: no
 * lock is taken and nothing is written, so it is safe beside a running agent and as another user.
 */
export async function storedFaults(cfg: AgentConfig): Promise<ActiveFault[]> {
  return readStoredFaults(join(cfg.stateDir, 'events'));
}
