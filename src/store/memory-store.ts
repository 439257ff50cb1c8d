/**
 * The event store without a journal: the real ledger (./ledger.ts), nothing on disk. Same
 * coalescing, shedding, acknowledgement and active-fault rules as the durable store; each append
 * is "committed" at once, so it is visible to pending() when append() resolves. For tests and
 * tools that need the store's behaviour without its files.
 */
import type { ActiveFault, HealthEvent, HealthEventInput } from '../events/types.js';
import type { AppendResult, EventStore } from './types.js';
import { EventStoreError } from './errors.js';
import { EventLedger, type LedgerOptions } from './ledger.js';
import { validateInput } from './records.js';

export class MemoryEventStore implements EventStore {
  protected readonly ledger: EventLedger;
  private readonly listeners = new Set<(r: AppendResult) => void>();
  private readonly pendingListeners = new Set<() => void>();
  private closed = false;

  constructor(opts: Partial<LedgerOptions> = {}) {
    this.ledger = new EventLedger({ bootId: 'memory', ...opts });
  }

  async append(input: HealthEventInput): Promise<AppendResult> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    const bad = validateInput(input);
    if (bad) throw new EventStoreError(`event store: ${bad}`, 'BAD_INPUT');
    const r = this.ledger.append(input);
    this.commit();
    for (const l of this.listeners) l(r);
    return r;
  }

  /** What the journal's commit does for the ledger: take the dirty set, reveal the batch. */
  private commit(): void {
    const no = this.ledger.startBatch();
    this.ledger.takeDirty();
    if (this.ledger.reveal(no)) for (const l of this.pendingListeners) l();
  }

  pending(limit?: number): HealthEvent[] {
    return this.ledger.pending(limit);
  }

  pendingCount(): number {
    return this.ledger.pendingCount();
  }

  async ack(sent: Array<Pick<HealthEvent, 'id' | 'count'>>): Promise<void> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    if (this.ledger.ack(sent)) this.commit();
  }

  onPending(listener: () => void): () => void {
    this.pendingListeners.add(listener);
    return () => this.pendingListeners.delete(listener);
  }

  onAppend(listener: (result: AppendResult) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  activeFaults(): ActiveFault[] {
    return this.ledger.activeFaults();
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
