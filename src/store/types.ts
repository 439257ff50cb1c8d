/**
 * The durable event store's interface (implementation: src/store/event-store.ts). Every event is
 * on disk before append() resolves, and stays until the control plane acknowledged it.
 */
import type { ActiveFault, HealthEvent, HealthEventInput } from '../events/types.js';

export interface AppendResult {
  event: HealthEvent;
  /** True when the input was merged into an existing pending event (storm coalescing / same XID from both sources). */
  coalesced: boolean;
}

export interface EventStore {
  /** Classified event in, durable event out (fsync'd before resolving). Never rejects for informational shedding; rejects on a full disk for critical events only after shedding failed. */
  append(input: HealthEventInput): Promise<AppendResult>;
  /**
   * Unacknowledged events, oldest first (per-GPU order kept), at most `limit`. Snapshots: counts as of now.
   * Only events whose first write is in the log file are listed (its fdatasync may still be running:
   * the send overlaps it), so nothing is sent that a kill -9 of the agent could lose.
   */
  pending(limit?: number): HealthEvent[];
  pendingCount(): number;
  /**
   * The control plane acknowledged these events as sent (id and the count that was sent). An event
   * whose count grew after it was sent stays pending with the remainder, so counts stay exact.
   */
  ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void>;
  /** Called when pending() may list more than before (the sender's wake-up). Returns an unsubscribe function. */
  onPending(listener: () => void): () => void;
  /** Called after every append (new or coalesced), once it is durable. Returns an unsubscribe function. */
  onAppend(listener: (result: AppendResult) => void): () => void;
  /** What is wrong right now, per GPU. */
  activeFaults(): ActiveFault[];
  close(): Promise<void>;
}
