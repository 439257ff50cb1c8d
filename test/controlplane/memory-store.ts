/**
 * A small in-memory EventStore for the control-plane tests (the real, durable store is another
 * part). Same contract: pending oldest first, ack by id and count, onAppend after every append,
 * active faults from raise/clear.
 */
import type { ActiveFault, HealthEvent, HealthEventInput } from '../../src/events/types.js';
import type { AppendResult, EventStore } from '../../src/store/types.js';

export class MemoryStore implements EventStore {
  private seq = 0;
  private readonly events: HealthEvent[] = [];
  private readonly faults = new Map<string, ActiveFault>();
  private readonly listeners = new Set<(r: AppendResult) => void>();
  private readonly pendingListeners = new Set<() => void>();
  /** Every event ever appended (for assertions). */
  readonly appended: HealthEvent[] = [];
  acks = 0;

  async append(input: HealthEventInput): Promise<AppendResult> {
    const ev: HealthEvent = {
      ...input,
      metrics: { ...input.metrics },
      id: `ev-${++this.seq}`,
      count: 1,
      firstTimeMs: input.timeMs,
      lastTimeMs: input.timeMs,
    };
    this.events.push(ev);
    this.appended.push({ ...ev });
    if (input.fault === 'raise') {
      const prev = this.faults.get(input.key);
      this.faults.set(input.key, {
        key: input.key,
        gpuIndex: input.gpuIndex,
        gpuUuid: input.gpuUuid,
        type: input.type,
        system: input.system,
        severity: input.severity,
        action: input.action,
        message: input.message,
        metrics: { ...input.metrics },
        sinceMs: prev?.sinceMs ?? input.timeMs,
        lastSeenMs: input.timeMs,
        count: (prev?.count ?? 0) + 1,
        lastEventId: ev.id,
      });
    } else if (input.fault === 'clear') {
      this.faults.delete(input.key);
    }
    const r = { event: { ...ev }, coalesced: false };
    for (const l of this.pendingListeners) l();
    for (const l of this.listeners) l(r);
    return r;
  }

  pending(limit = Infinity): HealthEvent[] {
    return this.events.slice(0, limit).map((e) => ({ ...e, metrics: { ...e.metrics } }));
  }

  pendingCount(): number {
    return this.events.length;
  }

  async ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void> {
    this.acks += 1;
    for (const s of sent) {
      const i = this.events.findIndex((e) => e.id === s.id);
      if (i < 0) continue;
      const e = this.events[i]!;
      if (e.count <= s.count) this.events.splice(i, 1);
      else e.count -= s.count;
    }
  }

  onPending(listener: () => void): () => void {
    this.pendingListeners.add(listener);
    return () => this.pendingListeners.delete(listener);
  }

  onAppend(listener: (r: AppendResult) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  activeFaults(): ActiveFault[] {
    return [...this.faults.values()];
  }

  async close(): Promise<void> {}
}

export function xidInput(gpu: number, xid: number, extra: Partial<HealthEventInput> = {}): HealthEventInput {
  const fatal = [13, 31, 32, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 100, 119, 120].includes(xid);
  return {
    type: 'xid',
    system: 'DRIVER',
    gpuIndex: gpu,
    gpuUuid: `GPU-0000000${gpu}-aaaa-bbbb-cccc-00000000000${gpu}`,
    metrics: { xid_code: String(xid) },
    message: `XID ${xid} on GPU ${gpu}`,
    timeMs: Date.now(),
    severity: fatal ? 'critical' : 'warning',
    action: fatal ? 'reboot' : 'none',
    citation: `test: XID ${xid}`,
    source: 'fake',
    key: `gpu${gpu}/xid/${xid}`,
    fault: fatal ? 'raise' : 'none',
    ...extra,
  };
}
