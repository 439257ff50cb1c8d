/**
 * The event store without a journal: the real ledger (./ledger.ts), nothing on disk. Same
 * coalescing, shedding, acknowledgement and active-fault rules as the durable store; each append
 * is "committed" at once, so it is visible to pending() when append() resolves. For tests and
 * tools that need the store's behaviour without its files, and for the agent when no state
 * directory is writable (src/agent/state-dir.ts): it then runs on this store, not durable.
 */
import type { ActiveFault, HealthEvent, HealthEventInput } from '../events/types.js';
import type { DurableEventStore, EventStoreStats } from './event-store.js';
import type { AppendResult } from './types.js';
import { EventStoreError } from './errors.js';
import { EventLedger, type LedgerOptions } from './ledger.js';
import { validateInput } from './records.js';

export class MemoryEventStore implements DurableEventStore {
  /** No directory: nothing is on disk. */
  readonly dir = ':memory:';
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

  async clearFault(key: string): Promise<boolean> {
    if (this.closed) throw new EventStoreError('event store is closed', 'CLOSED');
    if (!this.ledger.clearFault(key)) return false;
    this.commit();
    return true;
  }

  /** The durable store's stats, with nothing on disk. */
  stats(): EventStoreStats {
    const c = this.ledger.counters;
    return {
      pending: this.ledger.pendingCount(),
      bytesOnDisk: 0,
      liveBytes: this.ledger.liveBytes(),
      shed: c.shed,
      shedBySeverity: { ...c.shedBySeverity },
      coalesced: c.coalesced,
      crossSourceMerged: c.crossSourceMerged,
      diskFull: false,
      appends: c.appends,
      acks: c.acks,
      commits: 0,
      compactions: 0,
      corruptRecords: 0,
      tornTails: 0,
      badRecords: 0,
      oversizeRecords: 0,
      misplaced: 0,
      lock: null,
      activeFaults: this.ledger.activeFaultCount(),
      lastError: null,
    };
  }

  /** Nothing to compact: the ledger is the whole state. */
  async compact(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
  }
}
