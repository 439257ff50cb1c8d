/**
 * The control-plane tests' store: the real ledger without a journal (src/store/memory-store.ts),
 * so coalescing, ids, counts and active faults behave as in the durable store. Adds what the
 * tests assert on: every appended event as the store returned it, and the number of ack calls.
 */
import type { HealthEvent, HealthEventInput } from '../../src/events/types.js';
import type { AppendResult } from '../../src/store/types.js';
import { MemoryEventStore } from '../../src/store/memory-store.js';

export class MemoryStore extends MemoryEventStore {
  /** Every append's resulting event, oldest first (a coalesced append repeats its event's id). */
  readonly appended: HealthEvent[] = [];
  acks = 0;

  override async append(input: HealthEventInput): Promise<AppendResult> {
    const r = await super.append(input);
    this.appended.push({ ...r.event, metrics: { ...r.event.metrics } });
    return r;
  }

  override async ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void> {
    this.acks += 1;
    await super.ack(sent);
  }
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
