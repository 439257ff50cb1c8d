/**
 * Pure batching/coalescing for the kernel-log source (no I/O): the records read in one go are
 * collected here, then their events are merged per fault key with exact counts, so a storm of N
 * lines of one key becomes one HealthEventInput with `count: N` (one store append, one
 * ReportHealth) instead of N, carrying its newest occurrence's time and detail. Different keys
 * are never merged; order is first occurrence.
 */
import type { HealthEventInput } from '../events/types.js';

/** Records per batch before it is flushed (bounded memory; one group commit per batch). */
export const MAX_BATCH_RECORDS = 4096;

export interface CoalescedEvent {
  event: HealthEventInput;
  /** Sequence number of the first record that contributed (the cursor is pinned before it on failure). */
  firstSeq: bigint;
}

export class KmsgBatch {
  private readonly groups = new Map<string, CoalescedEvent>();
  private records = 0;
  /** Highest record seq in the batch (null when empty). */
  lastSeq: bigint | null = null;

  /** Add one record's events (possibly none). Takes ownership of them: a merged event is the newest object, updated in place. */
  add(seq: bigint, events: readonly HealthEventInput[]): void {
    this.records++;
    this.lastSeq = seq;
    for (const ev of events) {
      // different fault keys stay apart; so do replayed (historical) vs live occurrences and an
      // XID derived from a line without a number (xid_derived) vs the numbered XID line
      const id = `${ev.key}\u0000${ev.metrics.replayed ?? ''}\u0000${ev.metrics.xid_derived ?? ''}`;
      const g = this.groups.get(id);
      const n = ev.count ?? 1;
      if (!g) {
        this.groups.set(id, { event: { ...ev, metrics: { ...ev.metrics }, count: n }, firstSeq: seq });
        continue;
      }
      // The merged event speaks for its newest occurrence (its time, message and detail, as the
      // last of N separate appends would), so the fault's lastSeenMs is the newest line's; the
      // first record of the run is kept in kmsg_seq_first.
      // The newest event object becomes the merged one (no copies: a storm of N lines would
      // otherwise allocate 2N objects here and spend most of its time in the garbage collector).
      ev.count = (g.event.count ?? 1) + n;
      ev.timeMs = Math.max(g.event.timeMs, ev.timeMs);
      ev.metrics.kmsg_seq_first = g.firstSeq.toString();
      ev.metrics.kmsg_seq_last = seq.toString();
      g.event = ev;
    }
  }

  get size(): number {
    return this.records;
  }

  get full(): boolean {
    return this.records >= MAX_BATCH_RECORDS;
  }

  /** The coalesced events, in order of first occurrence; empties the batch. */
  take(): { events: CoalescedEvent[]; lastSeq: bigint | null; records: number } {
    const out = { events: [...this.groups.values()], lastSeq: this.lastSeq, records: this.records };
    this.groups.clear();
    this.records = 0;
    this.lastSeq = null;
    return out;
  }
}
